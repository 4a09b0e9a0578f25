"""SOCKS5 and HTTP listeners end to end: curl -> socks5 / http listener on
node B (the client names the resource) -> session -> export on node A -> a
real HTTP server: intact downloads and uploads, keep-alive, and a later
request for another resource on the same connection (421).

What a client gets when the resource is unknown or denied, the peer offline,
or its request bad is in test_bad_input.py (every listener, one table); the
256 MiB integrity downloads are in test_channels.py."""
import hashlib
import http.server
import os
import subprocess
import threading
import time
import unittest

from harness import Lab, free_port, online, wait_until
from test_channels import Origin

MiB = 1 << 20


class KeepAliveOrigin:
    """An HTTP/1.1 (keep-alive) origin: GET serves a directory, POST answers
    the sha256 of its body."""

    def __init__(self, directory):
        class Handler(http.server.SimpleHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                data = self.rfile.read(int(self.headers["Content-Length"]))
                body = hashlib.sha256(data).hexdigest().encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0),
            lambda *a, **kw: Handler(*a, directory=directory, **kw))
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Listeners(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab()
        cls.lab.start_server()
        os.makedirs(os.path.join(cls.lab.dir, "www"))
        cls.blob = os.urandom(16 * MiB)
        with open(os.path.join(cls.lab.dir, "www", "blob"), "wb") as f:
            f.write(cls.blob)
        cls.origin = Origin(os.path.join(cls.lab.dir, "www"))
        cls.origin11 = KeepAliveOrigin(os.path.join(cls.lab.dir, "www"))
        exports = (
            f'[[export]]\nname = "web"\ntarget = "127.0.0.1:{cls.origin.port}"\n'
            f'protocol = "tcp"\nallow = ["*"]\n'
            f'[[export]]\nname = "app"\ntarget = "127.0.0.1:{cls.origin11.port}"\n'
            f'protocol = "tcp"\nallow = ["*"]\n'
            f'[[export]]\nname = "app2"\ntarget = "127.0.0.1:{cls.origin11.port}"\n'
            f'protocol = "tcp"\nallow = ["*"]\n')
        cls.a, cls.a_admin = cls.lab.node("node-a", extra=exports)
        cls.socks_port = free_port()
        cls.http_port = free_port()
        listens = (
            f'[[listen]]\nbind = "127.0.0.1:{cls.socks_port}"\nprotocol = "socks5"\n'
            f'[[listen]]\nbind = "127.0.0.1:{cls.http_port}"\nprotocol = "http"\n')
        cls.b, cls.b_admin = cls.lab.node("node-b", extra=listens)
        wait_until(lambda: online(cls.a_admin), 10, "node A online")
        wait_until(lambda: online(cls.b_admin), 10, "node B online")

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()
        cls.origin.close()
        cls.origin11.close()

    def curl(self, *args, timeout=60):
        return subprocess.run(
            ["curl", "-sS", "--max-time", str(timeout), "-o", "-"] + list(args),
            capture_output=True, timeout=timeout + 10)

    def socks(self, url, timeout=60):
        return self.curl("--socks5-hostname", f"127.0.0.1:{self.socks_port}",
                         url, timeout=timeout)

    def http(self, path, timeout=60):
        return self.curl("-w", "\n%{http_code}",
                         f"http://127.0.0.1:{self.http_port}{path}",
                         timeout=timeout)

    def assert_healthy(self):
        self.assertTrue(self.a.alive() and self.b.alive())
        self.assertEqual(online(self.a_admin)["signal"]["state"], "online")
        self.assertEqual(online(self.b_admin)["signal"]["state"], "online")

    def intact(self, body):
        self.assertEqual(len(body), len(self.blob))
        self.assertEqual(hashlib.sha256(body).hexdigest(),
                         hashlib.sha256(self.blob).hexdigest())

    def split(self, r):
        body, _, code = r.stdout.rpartition(b"\n")
        return int(code), body

    def test_1_socks5_download_is_intact(self):
        r = self.socks("http://web/blob")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.intact(r.stdout)

    def test_4_http_prefix_download_is_intact(self):
        r = self.http("/r/web/blob")
        self.assertEqual(r.returncode, 0, r.stderr)
        code, body = self.split(r)
        self.assertEqual(code, 200)
        self.intact(body)

    def test_7a_http_upload_is_intact(self):
        path = os.path.join(self.lab.dir, "upload")
        data = os.urandom(4 * MiB)
        with open(path, "wb") as f:
            f.write(data)
        r = self.curl("--data-binary", "@" + path,
                      f"http://127.0.0.1:{self.http_port}/r/app/echo")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, hashlib.sha256(data).hexdigest().encode())

    def test_7b_http_later_request_for_another_resource_gets_421(self):
        t = time.monotonic()
        r = self.curl("-w", "\n%{http_code}\n",
                      f"http://127.0.0.1:{self.http_port}/r/app/blob",
                      f"http://127.0.0.1:{self.http_port}/r/app2/blob",
                      timeout=30)
        self.assertLess(time.monotonic() - t, 10)
        first, _, rest = r.stdout.partition(b"\n200\n")
        self.intact(first)
        # curl reuses the keep-alive connection; the proxy answers 421.
        code = rest.rstrip(b"\n").rpartition(b"\n")[2]
        self.assertEqual(code, b"421", rest[-300:])
        self.assertIn(b'request for "app2" on a connection to "app"', rest)
        self.assert_healthy()

    def test_8_still_serving(self):
        r = self.http("/r/web/")
        code, body = self.split(r)
        self.assertEqual(code, 200)
        self.assertIn(b"blob", body)
        r = self.socks("http://web/blob")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.intact(r.stdout)
        self.assert_healthy()


if __name__ == "__main__":
    unittest.main()
