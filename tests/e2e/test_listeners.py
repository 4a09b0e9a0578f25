"""SOCKS5 and HTTP listeners end to end: curl -> socks5 / http listener on
node B (the client names the resource) -> session -> export on node A -> a
real HTTP server; and what a client gets, in its own protocol, when the
resource is unknown or denied, or when it sends garbage."""
import hashlib
import http.server
import os
import socket
import subprocess
import threading
import time
import unittest

from harness import Lab, free_port, online, status, wait_until
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
            f'[[export]]\nname = "secret"\ntarget = "127.0.0.1:{cls.origin.port}"\n'
            f'protocol = "tcp"\nallow = ["{"b" * 52}"]\n'
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

    def listener_field(self, protocol, field):
        for a in status(self.b_admin)["actors"]:
            if a["name"] == "listener" and a["fields"].get("protocol") == protocol:
                return a["fields"].get(field)

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

    def test_2_socks5_unknown_resource(self):
        r = self.socks("http://nothing/", timeout=30)
        self.assertNotEqual(r.returncode, 0)
        # curl 97: CURLE_PROXY (older curl: 7 with the same text)
        self.assertIn(b"SOCKS", r.stderr)
        self.assertEqual(r.stdout, b"")
        wait_until(lambda: self.listener_field("socks5", "refused_unknown_resource"),
                   10, "the socks5 listener to count an unknown resource")
        self.assertIn("no online node exports 'nothing'", self.b.log_text())
        self.assert_healthy()

    def test_3_socks5_denied(self):
        r = self.socks("http://secret/blob", timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"SOCKS", r.stderr)
        wait_until(lambda: self.listener_field("socks5", "refused_denied"),
                   10, "the socks5 listener to count a denial")

    def test_4_http_prefix_download_is_intact(self):
        r = self.http("/r/web/blob")
        self.assertEqual(r.returncode, 0, r.stderr)
        code, body = self.split(r)
        self.assertEqual(code, 200)
        self.intact(body)

    def test_5_http_unknown_resource_is_404(self):
        r = self.http("/r/nothing/", timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        code, body = self.split(r)
        self.assertEqual(code, 404)
        self.assertEqual(body.count(b"\n"), 1, body)
        self.assertIn(b"nothing", body)
        self.assert_healthy()

    def test_6_http_denied_is_403(self):
        r = self.http("/r/secret/blob", timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        code, body = self.split(r)
        self.assertEqual(code, 403)
        self.assertEqual(body.count(b"\n"), 1, body)
        self.assertNotIn(self.blob[:64], body)
        self.assert_healthy()

    def test_7_http_garbage_is_400(self):
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=10) as s:
            s.sendall(b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
            got = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        self.assertTrue(got.startswith(b"HTTP/1.1 400 "), got)
        wait_until(lambda: self.listener_field("http", "refused_sniff_bad_request"),
                   10, "the http listener to count a bad request")
        self.assert_healthy()

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

    def test_8_still_serving_after_refusals(self):
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
