"""TCP half-close and reset carried end to end through a tcp listener, a
session and an export (issue 4: TCP FIN <-> stream FIN both ways, reset <->
RESET_STREAM): a client that shuts down writing still gets its answer from
a target that waits for EOF; a target that finishes first still hears the
client; a target that resets reaches the client as a reset, not as a clean
end."""
import socket
import struct
import threading
import unittest

from harness import Lab, free_port, online, status, wait_until


class Target:
    """A real TCP server on loopback; `mode` says what each connection does."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.heard = []       # what the target read before the client's EOF
        self.done = threading.Event()
        self.stop = False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        self.sock.settimeout(0.5)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def read_to_eof(self, conn):
        got = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return got
            got += chunk

    def handle(self, conn):
        conn.settimeout(30)
        try:
            if self.mode == "count-until-eof":
                # Answers only once the client has finished sending.
                got = self.read_to_eof(conn)
                conn.sendall(b"%d bytes, sha-free\n" % len(got))
                conn.close()
            elif self.mode == "speak-first-then-listen":
                conn.sendall(b"hello from the target\n")
                conn.shutdown(socket.SHUT_WR)   # done sending, still listening
                self.heard.append(self.read_to_eof(conn))
                conn.close()
            elif self.mode == "endless":
                # Streams until the client side goes away (a camera).
                chunk = b"z" * 65536
                while True:
                    conn.sendall(chunk)
            elif self.mode == "reset-midway":
                conn.sendall(b"x" * 100000)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                struct.pack("ii", 1, 0))
                conn.close()                    # RST
        except OSError:
            pass
        finally:
            self.done.set()

    def close(self):
        self.stop = True
        self.sock.close()


class HalfClose(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.targets = {m: Target(m) for m in
                       ("count-until-eof", "speak-first-then-listen", "reset-midway",
                        "endless")}
        cls.lab = Lab()
        cls.lab.start_server()
        exports = "".join(
            f'[[export]]\nname = "{m}"\ntarget = "127.0.0.1:{t.port}"\n'
            f'protocol = "tcp"\nallow = ["*"]\n' for m, t in cls.targets.items())
        cls.a, cls.a_admin = cls.lab.node("node-a", extra=exports)
        cls.ports = {m: free_port() for m in cls.targets}
        listens = "".join(
            f'[[listen]]\nbind = "127.0.0.1:{p}"\nprotocol = "tcp"\nresource = "{m}"\n'
            for m, p in cls.ports.items())
        cls.b, cls.b_admin = cls.lab.node("node-b", extra=listens)
        wait_until(lambda: online(cls.a_admin), 10, "node A online")
        wait_until(lambda: online(cls.b_admin), 10, "node B online")

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()
        for t in cls.targets.values():
            t.close()

    def connect(self, mode):
        c = socket.create_connection(("127.0.0.1", self.ports[mode]), timeout=30)
        c.settimeout(30)
        return c

    def read_to_eof(self, c):
        got = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                return got
            got += chunk

    def no_channels_left(self):
        for admin in (self.a_admin, self.b_admin):
            wait_until(lambda: not status(admin).get("channels"), 30,
                       "every channel to end")

    def test_client_finishes_first_and_still_gets_the_answer(self):
        c = self.connect("count-until-eof")
        try:
            c.sendall(b"y" * 300000)
            c.shutdown(socket.SHUT_WR)
            self.assertEqual(self.read_to_eof(c), b"300000 bytes, sha-free\n")
        finally:
            c.close()
        self.no_channels_left()

    def test_target_finishes_first_and_still_hears_the_client(self):
        t = self.targets["speak-first-then-listen"]
        c = self.connect("speak-first-then-listen")
        try:
            self.assertEqual(self.read_to_eof(c), b"hello from the target\n")
            c.sendall(b"the client talks after the target's FIN")
            c.shutdown(socket.SHUT_WR)
            wait_until(lambda: t.heard, 30, "the target to hear the client to its EOF")
            self.assertEqual(t.heard[-1], b"the client talks after the target's FIN")
        finally:
            c.close()
        self.no_channels_left()

    def test_target_reset_reaches_the_client_as_a_reset(self):
        got = b""
        c = None
        try:
            with self.assertRaises(ConnectionResetError):
                # (A client thread that is slow to run can meet the reset
                # already in its connect: the node accepted, relayed and
                # reset before connect() returned.)
                c = self.connect("reset-midway")
                while True:
                    chunk = c.recv(65536)
                    if not chunk:
                        break   # a clean end: wrong, the target reset
                    got += chunk
        finally:
            if c:
                c.close()
        self.assertLessEqual(len(got), 100000)
        self.no_channels_left()


    def test_client_that_finishes_and_leaves_stops_an_endless_target(self):
        t = self.targets["endless"]
        t.done.clear()
        c = self.connect("endless")
        try:
            got = b""
            while len(got) < 200000:
                got += c.recv(65536)
            c.shutdown(socket.SHUT_WR)   # finished sending...
        finally:
            c.close()                    # ...and gone, the stream still coming
        # The exporting node stops reading the target and lets it go.
        self.assertTrue(t.done.wait(30), "the endless target still has its connection")
        self.no_channels_left()


if __name__ == "__main__":
    unittest.main()
