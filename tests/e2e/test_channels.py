"""TCP proxy channels end to end: curl -> tcp listener on node B -> session
-> export on node A -> a real HTTP server; and what a client gets when the
resource is unknown, denied, or its target refuses."""
import hashlib
import http.server
import os
import socket
import subprocess
import threading
import unittest

from harness import Lab, free_port, http_get, online, status, wait_until

MiB = 1 << 20


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
        cls.origin = Origin(os.path.join(cls.lab.dir, "www"))
        cls.refusing_port = free_port()  # nothing listens there
        exports = (
            f'[[export]]\nname = "web"\ntarget = "127.0.0.1:{cls.origin.port}"\n'
            f'protocol = "tcp"\nallow = ["*"]\n'
            f'[[export]]\nname = "secret"\ntarget = "127.0.0.1:{cls.origin.port}"\n'
            f'protocol = "tcp"\nallow = ["{"b" * 52}"]\n'
            f'[[export]]\nname = "dead"\ntarget = "127.0.0.1:{cls.refusing_port}"\n'
            f'protocol = "tcp"\nallow = ["*"]\n')
        cls.a, cls.a_admin = cls.lab.node("node-a", extra=exports)
        cls.ports = {name: free_port() for name in ("web", "secret", "dead", "nothing")}
        listens = "".join(
            f'[[listen]]\nbind = "127.0.0.1:{port}"\nprotocol = "tcp"\nresource = "{name}"\n'
            for name, port in cls.ports.items())
        cls.b, cls.b_admin = cls.lab.node("node-b", extra=listens)
        wait_until(lambda: online(cls.a_admin), 10, "node A online")
        wait_until(lambda: online(cls.b_admin), 10, "node B online")

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()
        cls.origin.close()

    def curl(self, name, path="/blob.bin", timeout=120):
        return subprocess.run(
            ["curl", "-sS", "--max-time", str(timeout), "-o", "-",
             f"http://127.0.0.1:{self.ports[name]}{path}"],
            capture_output=True, timeout=timeout + 10)

    def test_1_download_through_the_tunnel_is_intact(self):
        r = self.curl("web")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout), len(self.blob))
        self.assertEqual(hashlib.sha256(r.stdout).hexdigest(),
                         hashlib.sha256(self.blob).hexdigest())

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

    def _refused(self, name, reason):
        r = self.curl(name, timeout=30)
        self.assertNotEqual(r.returncode, 0, "curl should see the connection closed")
        self.assertEqual(r.stdout, b"")
        def counted():
            for a in status(self.b_admin)["actors"]:
                if a["name"] == "listener" and a["fields"].get("resource") == name:
                    return a["fields"].get("refused_" + reason)
        wait_until(counted, 10, f"listener for {name} to count a {reason} refusal")

    def test_3_unknown_resource_is_refused_and_counted(self):
        self._refused("nothing", "unknown_resource")

    def test_4_denied_by_acl_nothing_reaches_the_target(self):
        self._refused("secret", "denied")
        self.assertIn("is not allowed to use 'secret'", self.b.log_text())

    def test_5_target_refuses(self):
        self._refused("dead", "target_failed")
        self.assertIn("Connection refused", self.b.log_text())

    def test_6_nodes_stay_healthy_after_refusals(self):
        r = self.curl("web", path="/", timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"blob.bin", r.stdout)
        self.assertEqual(online(self.a_admin)["signal"]["state"], "online")


if __name__ == "__main__":
    unittest.main()
