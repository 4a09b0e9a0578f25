"""A node that exports a name and listens for it serves its own clients.

Node O is the only node exporting `home` (a real HTTP server behind it),
with an allow list that names another node only, and it listens for
`home` itself (a tcp listener pinned to the name and an http listener that
names it in the path). The signaling server answers a look-up with the
other owners only, so before the LOCAL SESSION O refused its own clients
("no online node exports 'home'"). Now: O's clients get O's server, no
peer session is opened (O's session list stays empty), the channels are
counted, O's look-up lists O first, a client of a name nobody exports
still gets a clear refusal, and O keeps serving its own clients while the
signaling server is down. A large download is byte-exact (the local
session's credit carries it without loss).
"""
import hashlib
import json
import os
import subprocess
import socket
import sys
import threading
import unittest

from harness import Lab, free_port, http_get, online, status, wait_until


class WebServer:
    """python3 -m http.server over a folder with hello.txt and big.bin."""

    def __init__(self, lab):
        root = os.path.join(lab.dir, "www")
        os.makedirs(root)
        with open(os.path.join(root, "hello.txt"), "w") as f:
            f.write("served by O\n")
        self.big = os.urandom(24 * 1024 * 1024)
        with open(os.path.join(root, "big.bin"), "wb") as f:
            f.write(self.big)
        self.port = free_port()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
             "--directory", root, str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: http_get(
            f"http://127.0.0.1:{self.port}/hello.txt")[0] == 200,
            10, "the HTTP server")

    def close(self):
        self.p.terminate()
        self.p.wait(timeout=10)


def curl(url, timeout=30, binary=False):
    r = subprocess.run(["curl", "-sS", "--max-time", str(timeout), url],
                       capture_output=True, timeout=timeout + 10)
    return (r.stdout if binary else r.stdout.decode(errors="replace"),
            r.stderr.decode(errors="replace"), r.returncode)


class UdpEcho:
    """A UDP echo server on loopback (a thread), until close()."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        while not self.stop:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            self.sock.sendto(data, addr)

    def close(self):
        self.stop = True
        self.t.join(timeout=5)
        self.sock.close()


class OwnExport(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab()
        lab = cls.lab
        lab.start_server()
        cls.web = WebServer(lab)
        cls.tcp_port, cls.http_port = free_port(), free_port()
        cls.echo = UdpEcho()
        cls.udp_port = free_port()
        # The allow list names some other node only: O's own listeners are
        # O's operator's own, not a remote peer.
        other = "a" * 52
        cls.o, cls.o_admin = lab.node("node-o", extra=(
            f'[[export]]\nname = "home"\n'
            f'target = "127.0.0.1:{cls.web.port}"\nprotocol = "tcp"\n'
            f'allow = ["{other}"]\n'
            f'[[listen]]\nbind = "127.0.0.1:{cls.tcp_port}"\n'
            f'protocol = "tcp"\nresource = "home"\n'
            f'[[listen]]\nbind = "127.0.0.1:{cls.http_port}"\n'
            f'protocol = "http"\n'
            f'[[export]]\nname = "echo-udp"\n'
            f'target = "127.0.0.1:{cls.echo.port}"\nprotocol = "udp"\n'
            f'allow = ["{other}"]\n'
            f'[[listen]]\nbind = "127.0.0.1:{cls.udp_port}"\n'
            f'protocol = "udp"\nresource = "echo-udp"\n'))
        wait_until(lambda: online(cls.o_admin), 15, "O online")
        wait_until(lambda: {e["name"]: e["registration"] for e in
                            status(cls.o_admin)["exports"]}.get("home")
                   == "registered", 15, "home registered")
        cls.o_id = status(cls.o_admin)["nodeId"]

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()
        cls.web.close()
        cls.echo.close()

    def test_1_own_clients_reach_the_own_export_without_a_session(self):
        before = status(self.o_admin)
        for _ in range(3):
            out, err, rc = curl(f"http://127.0.0.1:{self.tcp_port}/hello.txt")
            self.assertEqual((rc, out), (0, "served by O\n"), err)
            out, err, rc = curl(
                f"http://127.0.0.1:{self.http_port}/r/home/hello.txt")
            self.assertEqual((rc, out), (0, "served by O\n"), err)
        # Each client is two channels of O: its client channel and the
        # export channel that connected the target.
        opened = lambda: int(status(self.o_admin).get("channelsOpened", 0)) \
            - int(before.get("channelsOpened", 0))
        wait_until(lambda: opened() == 12, 10, "12 channels counted",)
        sessions = status(self.o_admin)["sessions"]
        self.assertEqual(sessions.get("sessions", []), [],
                         "a node must not open a session to itself")
        self.assertEqual(int(sessions.get("opened", 0)), 0, sessions)
        self.assertNotIn("refusing to open a session", self.o.log_text())

    def test_2_a_large_download_is_byte_exact(self):
        body, err, rc = curl(f"http://127.0.0.1:{self.tcp_port}/big.bin",
                             timeout=60, binary=True)
        self.assertEqual(rc, 0, err)
        self.assertEqual(hashlib.sha256(body).hexdigest(),
                         hashlib.sha256(self.web.big).hexdigest())

    def test_3_the_lookup_lists_this_node_first(self):
        code, body = http_get(
            f"http://127.0.0.1:{self.o_admin}/v1/lookup/home")
        self.assertEqual(code, 200, body)
        self.assertEqual(json.loads(body)["nodeIds"], [self.o_id])

    def test_4_a_name_nobody_exports_is_still_refused_clearly(self):
        out, err, rc = curl(f"http://127.0.0.1:{self.http_port}/r/nothing/x")
        self.assertIn("no online node exports 'nothing'", out)

    def test_6_own_udp_export_serves_its_own_udp_listener(self):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(0.5)
        try:
            got = 0
            for i in range(200):
                msg = b"datagram %d " % i + os.urandom(i % 1000)
                c.sendto(msg, ("127.0.0.1", self.udp_port))
                try:
                    if c.recvfrom(65535)[0] == msg:
                        got += 1
                except socket.timeout:
                    pass
            # In process, nothing is lost but what waits while the flow opens.
            self.assertGreaterEqual(got, 195)
        finally:
            c.close()

    def test_5_served_while_the_signaling_server_is_down(self):
        self.lab.server.stop()
        try:
            wait_until(lambda: status(self.o_admin)["signal"]["state"]
                       != "online", 15, "O notices the server is gone")
            out, err, rc = curl(f"http://127.0.0.1:{self.tcp_port}/hello.txt")
            self.assertEqual((rc, out), (0, "served by O\n"), err)
        finally:
            self.lab.server.start()
        wait_until(lambda: online(self.o_admin), 40, "O online again")


if __name__ == "__main__":
    unittest.main()
