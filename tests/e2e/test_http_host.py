"""The Host a web server behind an `http` export sees: its own address,
whatever name the client used (`/r/<name>/` or `<name>.localhost`), so
virtual-host servers answer as if asked directly; a keep-alive connection
carries several requests, each rewritten."""
import http.client
import http.server
import json
import threading
import unittest

from harness import Lab, free_port, online, wait_until


class EchoHost(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({"host": self.headers.get("Host"), "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class HttpHost(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoHost)
        cls.origin = f"127.0.0.1:{cls.httpd.server_address[1]}"
        threading.Thread(target=cls.httpd.serve_forever, daemon=True).start()
        cls.lab = Lab()
        cls.lab.start_server()
        cls.a, cls.a_admin = cls.lab.node(
            "node-a",
            extra=f'[[export]]\nname = "site"\ntarget = "{cls.origin}"\n'
                  f'protocol = "http"\nallow = ["*"]\n'
                  f'[[export]]\nname = "raw"\ntarget = "{cls.origin}"\n'
                  f'protocol = "tcp"\nallow = ["*"]\n')
        cls.port = free_port()
        cls.b, cls.b_admin = cls.lab.node(
            "node-b", extra=f'[[listen]]\nbind = "127.0.0.1:{cls.port}"\nprotocol = "http"\n')
        wait_until(lambda: online(cls.a_admin), 10, "node A online")
        wait_until(lambda: online(cls.b_admin), 10, "node B online")

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()
        cls.httpd.shutdown()
        cls.httpd.server_close()

    def get(self, conn, path, host=None):
        headers = {"Host": host} if host else {}
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        self.assertEqual(r.status, 200, body)
        return json.loads(body)

    def test_prefix_requests_reach_the_target_with_its_own_host(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            for path in ("/r/site/", "/r/site/a?x=1", "/r/site/b"):
                seen = self.get(conn, path)
                self.assertEqual(seen["host"], self.origin)
                self.assertEqual(seen["path"], path[len("/r/site"):])
        finally:
            conn.close()

    def test_name_localhost_host_becomes_the_target(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            seen = self.get(conn, "/login", host=f"site.localhost:{self.port}")
            self.assertEqual(seen, {"host": self.origin, "path": "/login"})
        finally:
            conn.close()

    def test_tcp_export_passes_host_untouched(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            seen = self.get(conn, "/r/raw/x")
            self.assertEqual(seen["host"], f"127.0.0.1:{self.port}")
            self.assertEqual(seen["path"], "/x")
        finally:
            conn.close()


if __name__ == "__main__":
    unittest.main()
