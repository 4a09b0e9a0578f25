"""The linger race, forced (issue 12): two real nodes, each exporting an echo
server and each with a tcp listener to the other's export, open a stream
from each side at the moment the session's linger expires, 200 rounds.
Every stream must arrive whole: with the close handshake, a stream opened
in the close's last milliseconds either keeps the session or goes to a new
one (docs/sessions.md), and is never cut.

The linger is 500 ms so that 200 rounds fit in about two minutes; each
round waits the linger plus an offset that sweeps -40 ms .. +40 ms across
the rounds, so the opens land before, in and after the handshake."""
import hashlib
import os
import socket
import threading
import time
import unittest

from harness import Lab, free_port, online, status, wait_until

ROUNDS = int(os.environ.get("LINGER_RACE_ROUNDS", "200"))
LINGER = 0.5
PAYLOAD = 32 * 1024


class EchoServer:
    """A real TCP echo server on loopback (a thread per connection)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.echo, args=(conn,), daemon=True).start()

    @staticmethod
    def echo(conn):
        with conn:
            try:
                while True:
                    b = conn.recv(65536)
                    if not b:
                        conn.shutdown(socket.SHUT_WR)
                        return
                    conn.sendall(b)
            except OSError:
                return

    def close(self):
        self.closed = True
        self.sock.close()


def echo_through(port, payload, timeout=20):
    """Sends payload through the listener, half-closes, reads to EOF.
    Returns (ok, what happened)."""
    got = bytearray()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while True:
                b = s.recv(65536)
                if not b:
                    break
                got += b
    except OSError as e:
        return False, f"{type(e).__name__}: {e} after {len(got)} bytes"
    if hashlib.sha256(got).digest() != hashlib.sha256(payload).digest():
        return False, f"{len(got)} of {len(payload)} bytes, not equal"
    return True, "ok"


class LingerRace(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab()
        cls.lab.start_server()
        cls.echo_a = EchoServer()
        cls.echo_b = EchoServer()
        cls.port_a = free_port()  # on A, to B's echo
        cls.port_b = free_port()  # on B, to A's echo
        common = f'[session]\nidle_linger = "{int(LINGER * 1000)}ms"\n'

        def node(name, listen_port, to, echo_port):
            extra = (common + f'[[listen]]\nbind = "127.0.0.1:{listen_port}"\n'
                     f'protocol = "tcp"\nresource = "{to}"\n'
                     f'[[export]]\nname = "echo-{name}"\n'
                     f'target = "127.0.0.1:{echo_port}"\nprotocol = "tcp"\n'
                     f'allow = ["*"]\n')
            return cls.lab.node(f"node-{name}", extra=extra)

        cls.a, cls.a_admin = node("a", cls.port_a, "echo-b", cls.echo_a.port)
        cls.b, cls.b_admin = node("b", cls.port_b, "echo-a", cls.echo_b.port)
        wait_until(lambda: online(cls.a_admin), 10, "node A online")
        wait_until(lambda: online(cls.b_admin), 10, "node B online")

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()
        cls.echo_a.close()
        cls.echo_b.close()

    def test_streams_opened_by_both_sides_as_the_linger_expires(self):
        failures = []
        t0 = time.monotonic()
        for r in range(ROUNDS):
            payloads = (os.urandom(PAYLOAD), os.urandom(PAYLOAD))
            results = [None, None]

            def go(i, port):
                results[i] = echo_through(port, payloads[i])

            threads = [threading.Thread(target=go, args=(0, self.port_a)),
                       threading.Thread(target=go, args=(1, self.port_b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            for side, res in zip(("A", "B"), results):
                if res is None or not res[0]:
                    failures.append(f"round {r}, opened by {side}: {res}")
            # Both streams are done; the session lingers from about now.
            offset = -0.040 + 0.080 * (r % 41) / 40
            time.sleep(LINGER + offset)
        took = time.monotonic() - t0
        self.assertEqual(failures, [], f"{len(failures)} streams lost")
        # The race was really run: sessions closed at their linger's end
        # (by agreement) between rounds, and opens met closing sessions.
        agreed = sum(p.log_text().count("both ends agreed")
                     for p in (self.a, self.b))
        print(f"\n{ROUNDS} rounds in {took:.0f} s; {agreed} agreed closes logged")
        self.assertGreater(agreed, 10, "the lingers never expired: no race")
        for admin in (self.a_admin, self.b_admin):
            self.assertEqual(status(admin)["signal"]["state"], "online")


if __name__ == "__main__":
    unittest.main()
