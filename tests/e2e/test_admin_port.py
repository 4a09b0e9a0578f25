"""The admin port under abuse, and its bearer token (docs/admin.md).

Real p2proxy processes on loopback: one request with 50 MiB of headers,
500 slow connections next to a fast client, a non-loopback bind with and
without [admin] token_file, `p2proxy status --token-file`, and the same
rule for the signaling server's admin port.
"""
import os
import resource
import socket
import threading
import time
import unittest
import urllib.error
import urllib.request

from harness import Lab, free_port, http_get, run, status, wait_until


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def get(port, path="/v1/status", headers=None, timeout=5):
    """(status, body) of GET http://127.0.0.1:PORT/PATH."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def write_secret(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text + "\n")
    os.chmod(path, mode)


class AdminPortUnderLoad(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab()
        cls.lab.start_server()
        cls.node, cls.admin = cls.lab.node("node-a")
        wait_until(lambda: status(cls.admin), 10, "node A's admin port")

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()

    def test_a_flood_of_headers_gets_431_and_costs_no_memory(self):
        pid = self.node.p.pid
        before = rss_bytes(pid)
        payload = (b"GET /v1/status HTTP/1.1\r\nHost: x\r\n"
                   + b"X-a: b\r\n" * (50 * 1024 * 1024 // 8) + b"\r\n")
        s = socket.create_connection(("127.0.0.1", self.admin), timeout=10)

        def send():
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the node may close before it is all sent

        sender = threading.Thread(target=send)
        sender.start()
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        finally:
            sender.join(30)
            s.close()
        self.assertTrue(answer.startswith(b"HTTP/1.1 431 "), answer[:200])
        grown = rss_bytes(pid) - before
        self.assertLess(grown, 16 * 1024 * 1024,
                        f"RSS grew by {grown / 2**20:.1f} MiB")
        self.assertEqual(get(self.admin)[0], 200)

    def test_500_slow_clients_do_not_delay_a_fast_one(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 1200:
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (min(hard, 4096), hard))
        slow = []
        try:
            for _ in range(500):
                c = socket.create_connection(("127.0.0.1", self.admin),
                                             timeout=5)
                c.sendall(b"GET /v1/status HTTP/1.1\r\nHost: slow\r\n")
                slow.append(c)
            for _ in range(3):
                for c in slow:  # one more byte of head each, never the end
                    c.sendall(b"X")
                t0 = time.monotonic()
                code, _ = get(self.admin, timeout=5)
                took = time.monotonic() - t0
                self.assertEqual(code, 200)
                self.assertLess(took, 1.0, f"/v1/status took {took:.2f} s")
                time.sleep(0.3)
            # The slow ones were all still open (not shed to make it pass).
            for c in slow:
                c.setblocking(False)
                with self.assertRaises(BlockingIOError):
                    c.recv(1)
        finally:
            for c in slow:
                c.close()

    def test_connections_are_bounded_and_a_new_client_still_gets_in(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 1200:
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (min(hard, 4096), hard))
        slow = []
        try:
            for _ in range(700):
                c = socket.create_connection(("127.0.0.1", self.admin),
                                             timeout=5)
                c.sendall(b"GET /v1/status HTTP/1.1\r\n")
                slow.append(c)
            t0 = time.monotonic()
            code, _ = get(self.admin, timeout=5)
            took = time.monotonic() - t0
            self.assertEqual(code, 200)
            self.assertLess(took, 1.0, f"/v1/status took {took:.2f} s")

            def held():
                n = 0
                for c in slow:
                    c.setblocking(False)
                    try:
                        if c.recv(1) != b"":
                            n += 1
                    except BlockingIOError:
                        n += 1  # still open, nothing to read
                    except OSError:
                        pass
                return n
            # The node holds at most 512 connections (docs/admin.md); it
            # closed the oldest waiting ones to admit the newer.
            self.assertLessEqual(held(), 512)
        finally:
            for c in slow:
                c.close()


class AdminPortToken(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab()
        cls.lab.start_server()

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()

    def node_config(self, name, port, token_file=None):
        path = os.path.join(self.lab.dir, f"{name}.toml")
        extra = f'token_file = "{token_file}"\n' if token_file else ""
        with open(path, "w") as f:
            f.write(f'[node]\nkey = "{name}.key"\n'
                    f'[signal]\nserver = "127.0.0.1:{self.lab.signal_port}"\n'
                    f'token = "{self.lab.token}"\n'
                    f'[admin]\nlisten = "0.0.0.0:{port}"\n{extra}')
        return path

    def test_non_loopback_without_token_file_is_refused(self):
        path = self.node_config("open", free_port())
        r = run(["node", "--config", path], timeout=20)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("admin.listen", r.stderr)
        self.assertIn("not a loopback address", r.stderr)
        self.assertIn("token_file", r.stderr)

    def test_a_token_file_others_can_read_is_refused(self):
        token = os.path.join(self.lab.dir, "loose.token")
        write_secret(token, "s3cret-loose", mode=0o644)
        path = self.node_config("loose", free_port(), token)
        r = run(["node", "--config", path], timeout=20)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("admin.token_file", r.stderr)
        self.assertIn("chmod 600", r.stderr)

    def test_bearer_token_guards_every_request(self):
        token = os.path.join(self.lab.dir, "admin.token")
        write_secret(token, "s3cret-admin")
        port = free_port()
        path = self.node_config("guarded", port, token)
        self.lab.spawn("guarded", ["node", "--config", path])
        wait_until(lambda: get(port, timeout=2)[0] == 401, 10,
                   "the guarded admin port")
        code, body = get(port)
        self.assertEqual(code, 401)
        self.assertIn("Bearer", body)
        self.assertEqual(get(port, "/metrics")[0], 401)
        wrong = {"Authorization": "Bearer s3cret-admiN"}
        self.assertEqual(get(port, headers=wrong)[0], 401)
        good = {"Authorization": "Bearer s3cret-admin"}
        code, body = get(port, headers=good)
        self.assertEqual(code, 200, body)
        self.assertIn('"nodeId"', body)
        self.assertEqual(get(port, "/metrics", headers=good)[0], 200)

        where = f"127.0.0.1:{port}"
        r = run(["status", "--admin", where, "--token-file", token])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("signal link", r.stdout)
        r = run(["status", "--admin", where])
        self.assertEqual(r.returncode, 1)
        self.assertIn("--token-file", r.stderr)

    def test_signal_server_admin_port_follows_the_same_rule(self):
        port = free_port()
        r = run(["signal", "--listen", f"127.0.0.1:{free_port()}",
                 "--key", os.path.join(self.lab.dir, "signal-open.key"),
                 "--admin", f"0.0.0.0:{port}"], timeout=20)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not a loopback address", r.stderr)
        self.assertIn("--admin-token-file", r.stderr)

        token = os.path.join(self.lab.dir, "signal-admin.token")
        write_secret(token, "s3cret-signal")
        self.lab.spawn("signal-guarded", [
            "signal", "--listen", f"127.0.0.1:{free_port()}",
            "--key", os.path.join(self.lab.dir, "signal-guarded.key"),
            "--admin", f"0.0.0.0:{port}", "--admin-token-file", token])
        wait_until(lambda: get(port, timeout=2)[0] == 401, 10,
                   "the guarded signal admin port")
        good = {"Authorization": "Bearer s3cret-signal"}
        self.assertEqual(get(port, headers=good)[0], 200)
        r = run(["status", "--admin", f"127.0.0.1:{port}",
                 "--token-file", token])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("signaling server", r.stdout)

    def test_loopback_needs_no_token(self):
        code, _ = http_get(f"http://127.0.0.1:{self.lab.signal_admin}/v1/status")
        self.assertEqual(code, 200)

    def test_loopback_without_token_answers_only_loopback_names(self):
        # DNS rebinding: a web page of another site whose name now resolves
        # to 127.0.0.1 sends its own name as Host; without a token the port
        # answers only loopback names.
        port = self.lab.signal_admin
        for host in ("evil.example", "evil.example:%d" % port, "10.1.2.3"):
            code, body = get(port, headers={"Host": host})
            self.assertEqual(code, 403, host)
            self.assertIn("loopback host", body)
        for host in ("127.0.0.1:%d" % port, "localhost", "[::1]:%d" % port,
                     "status.localhost:%d" % port):
            self.assertEqual(get(port, headers={"Host": host})[0], 200, host)


if __name__ == "__main__":
    unittest.main()
