"""Proxy channels end to end: curl -> a listener on node B -> session ->
export on node A -> a real HTTP server. Integrity (issue #4, case 9): the
SHA-256 of a 256 MiB download through the tunnel equals the origin's, through
a tcp, an http and a socks5 listener; several clients share one session.

Refusals (unknown, denied, offline, bad input) are in test_bad_input.py; the
close semantics (target refuses, closes first, ...) in test_channel_states.py."""
import hashlib
import http.server
import os
import subprocess
import threading
import unittest

from harness import Lab, free_port, online, status, wait_until

MiB = 1 << 20
BIG = 256 * MiB


def write_random_file(path, size, chunk=8 * MiB):
    """Writes `size` random bytes in chunks; returns their SHA-256 (hex)."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            b = os.urandom(min(chunk, left))
            h.update(b)
            f.write(b)
            left -= len(b)
    return h.hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(8 * MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


class Origin:
    """A real HTTP server (Python's http.server) on loopback serving a
    directory with one random file."""

    def __init__(self, directory):
        handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(
            *a, directory=directory, **kw)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class TcpChannels(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab()
        cls.lab.start_server()
        os.makedirs(os.path.join(cls.lab.dir, "www"))
        cls.blob = os.urandom(64 * MiB)
        with open(os.path.join(cls.lab.dir, "www", "blob.bin"), "wb") as f:
            f.write(cls.blob)
        cls.big = os.path.join(cls.lab.dir, "www", "big.bin")
        cls.big_sha = write_random_file(cls.big, BIG)
        cls.origin = Origin(os.path.join(cls.lab.dir, "www"))
        exports = (
            f'[[export]]\nname = "web"\ntarget = "127.0.0.1:{cls.origin.port}"\n'
            f'protocol = "tcp"\nallow = ["*"]\n')
        cls.a, cls.a_admin = cls.lab.node("node-a", extra=exports)
        cls.ports = {name: free_port() for name in ("web", "http", "socks5")}
        listens = (
            f'[[listen]]\nbind = "127.0.0.1:{cls.ports["web"]}"\nprotocol = "tcp"\n'
            f'resource = "web"\n'
            f'[[listen]]\nbind = "127.0.0.1:{cls.ports["http"]}"\nprotocol = "http"\n'
            f'[[listen]]\nbind = "127.0.0.1:{cls.ports["socks5"]}"\nprotocol = "socks5"\n')
        cls.b, cls.b_admin = cls.lab.node("node-b", extra=listens)
        wait_until(lambda: online(cls.a_admin), 10, "node A online")
        wait_until(lambda: online(cls.b_admin), 10, "node B online")

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()
        cls.origin.close()
        for name in ("big.bin", "blob.bin"):
            path = os.path.join(cls.lab.dir, "www", name)
            if os.path.exists(path):
                os.remove(path)  # large: do not leave them in /tmp

    def curl(self, name, path="/blob.bin", timeout=120):
        return subprocess.run(
            ["curl", "-sS", "--max-time", str(timeout), "-o", "-",
             f"http://127.0.0.1:{self.ports[name]}{path}"],
            capture_output=True, timeout=timeout + 10)

    def download_256mib(self, *curl_args):
        """curl the 256 MiB file to disk; its SHA-256 must be the origin's."""
        out = os.path.join(self.lab.dir, "download.bin")
        try:
            r = subprocess.run(["curl", "-sS", "--max-time", "300", "-o", out]
                               + list(curl_args), capture_output=True, timeout=320)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(os.path.getsize(out), BIG)
            self.assertEqual(file_sha256(out), self.big_sha)
        finally:
            if os.path.exists(out):
                os.remove(out)

    def test_1_256mib_through_a_tcp_listener_is_intact(self):
        self.download_256mib(f"http://127.0.0.1:{self.ports['web']}/big.bin")

    def test_1a_256mib_through_an_http_listener_is_intact(self):
        self.download_256mib(f"http://127.0.0.1:{self.ports['http']}/r/web/big.bin")

    def test_1b_256mib_through_socks5_is_intact(self):
        self.download_256mib("--socks5-hostname", f"127.0.0.1:{self.ports['socks5']}",
                             "http://web/big.bin")

    def test_2_several_clients_share_one_session(self):
        results = []
        def fetch():
            results.append(self.curl("web"))
        threads = [threading.Thread(target=fetch) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=200)
        self.assertEqual(len(results), 4)
        want = hashlib.sha256(self.blob).hexdigest()
        for r in results:
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(hashlib.sha256(r.stdout).hexdigest(), want)
        sessions = status(self.b_admin)["sessions"]["sessions"]
        self.assertEqual(len(sessions), 1, sessions)

    def test_3_nodes_stay_healthy(self):
        r = self.curl("web", path="/", timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"blob.bin", r.stdout)
        self.assertEqual(online(self.a_admin)["signal"]["state"], "online")


if __name__ == "__main__":
    unittest.main()
