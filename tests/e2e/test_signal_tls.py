"""The signaling link as an attacker meets it: TLS 1.3 to a pinned server.

Real `p2proxy signal` and `p2proxy node` processes on loopback, with a TCP
relay on the path (it captures, or flips a byte), a server with another key,
a rogue server that terminates TLS with its own key, a flood of bad logins
from the node's own address, and token files with loose modes.
"""
import os
import socket
import ssl
import struct
import threading
import time
import unittest

from harness import Lab, free_port, http_get, online, run, status, wait_until
from rogue_signal import RogueSignal, load_signal_pb2, make_server_cert

EXPORT = "secret-camera-name"


class Relay:
    """An on-path TCP relay: 127.0.0.1:port -> 127.0.0.1:upstream. It keeps
    every byte it carries; flip() makes it corrupt the next bytes that go
    from the server to the node."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.captured = bytearray()
        self.lock = threading.Lock()
        self.flip_pending = False
        self.flipped = 0
        self.stopping = threading.Event()
        self.socks = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def flip(self):
        with self.lock:
            self.flip_pending = True

    def _accept(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.upstream), timeout=5)
            except OSError:
                c.close()
                continue
            self.socks += [c, u]
            for src, dst, down in ((c, u, False), (u, c, True)):
                t = threading.Thread(target=self._pump, args=(src, dst, down), daemon=True)
                self.threads.append(t)
                t.start()

    def _pump(self, src, dst, down):
        src.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            data = bytearray(data)
            with self.lock:
                self.captured += data
                if down and self.flip_pending:
                    data[-1] ^= 0x01  # inside a record: its tag cannot match
                    self.flip_pending = False
                    self.flipped += 1
            try:
                dst.sendall(bytes(data))
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.stopping.set()
        self.lsock.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=5)


def signal_state(admin):
    return status(admin)["signal"]


class OnPath(unittest.TestCase):
    def setUp(self):
        self.lab = Lab()
        self.lab.start_server()
        self.relay = Relay(self.lab.signal_port)
        self.server_id = self.lab.server_id()

    def tearDown(self):
        self.lab.close()
        self.relay.close()

    def node_via_relay(self, name, exports=(), extra=""):
        # Lab.node points nodes at the server's port; this one at the relay.
        real = self.lab.signal_port
        self.lab.signal_port = self.relay.port
        try:
            return self.lab.node(name, exports=exports, extra=extra)
        finally:
            self.lab.signal_port = real

    def test_relay_sees_neither_the_token_nor_an_export_name(self):
        node, admin = self.node_via_relay("cam", exports=[EXPORT])
        wait_until(lambda: online(admin), 10, "the node online through the relay")
        viewer, v_admin = self.lab.node("viewer")
        wait_until(lambda: online(v_admin), 10, "the viewer online")
        code, body = http_get(f"http://127.0.0.1:{v_admin}/v1/lookup/{EXPORT}")
        self.assertEqual(code, 200, body)
        self.assertIn(status(admin)["nodeId"], body)  # registered through it
        with self.relay.lock:
            seen = bytes(self.relay.captured)
        self.assertGreater(len(seen), 200, "the relay carried nothing")
        self.assertNotIn(self.lab.token.encode(), seen)
        self.assertNotIn(EXPORT.encode(), seen)
        self.assertNotIn(status(admin)["nodeId"].encode(), seen)

    def test_a_tampered_record_breaks_the_connection_not_the_node(self):
        node, admin = self.node_via_relay("cam", exports=[EXPORT])
        wait_until(lambda: online(admin), 10, "the node online through the relay")
        node_id = status(admin)["nodeId"]
        logins = int(signal_state(admin)["loginsCount"])
        self.relay.flip()
        # Make the server send something: the answer to a look-up.
        http_get(f"http://127.0.0.1:{admin}/v1/lookup/{EXPORT}")
        wait_until(lambda: self.relay.flipped == 1, 5, "the relay to flip a byte")
        wait_until(lambda: int(signal_state(admin)["loginsCount"]) > logins, 10,
                   "the node to log in again after the broken record")
        st = wait_until(lambda: online(admin), 10, "the node back online")
        self.assertGreaterEqual(int(st["signal"]["reconnects"]), 1)
        history = " ".join(e.get("detail", "") for e in st["signal"].get("history", []))
        self.assertIn("TLS", history)
        # Its state is whole: it is registered again and found by others.
        viewer, v_admin = self.lab.node("viewer")
        wait_until(lambda: online(v_admin), 10, "the viewer online")
        wait_until(lambda: node_id in http_get(
            f"http://127.0.0.1:{v_admin}/v1/lookup/{EXPORT}")[1], 5,
            "the export found again")
        self.assertTrue(node.alive())


class ServerIdentity(unittest.TestCase):
    def setUp(self):
        self.lab = Lab()
        self.rogue = None

    def tearDown(self):
        self.lab.close()
        if self.rogue is not None:
            self.rogue.close()

    def other_id(self):
        key = os.path.join(self.lab.dir, "other.key")
        r = run(["keygen", "--out", key])
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip()

    def assert_refused(self, admin, expected, presented):
        st = wait_until(lambda: (lambda s: s if expected in s.get("lastError", "")
                                 else None)(signal_state(admin)),
                        10, "the refusal in the node's status")
        self.assertNotEqual(st["state"], "online")
        self.assertIn(presented, st["lastError"])
        self.assertEqual(int(st.get("loginsCount", 0)), 0)
        return st

    def test_a_server_with_another_key_than_pinned_is_refused(self):
        self.lab.start_server()
        pinned = self.other_id()
        node, admin = self.lab.node(
            "n", extra="", token=None)
        node.stop()
        cfg = os.path.join(self.lab.dir, "n.toml")
        with open(cfg) as f:
            text = f.read()
        with open(cfg, "w") as f:
            f.write(text.replace("[signal]\n", f'[signal]\nserver_id = "{pinned}"\n'))
        node.start()
        self.assert_refused(admin, pinned, self.lab.server_id())
        wait_until(lambda: f"expected {pinned}" in node.log_text(), 5,
                   "the refusal in the node's log")
        self.assertEqual(status(self.lab.signal_admin).get("nodes", []), [])

    def test_a_relay_terminating_tls_with_its_own_key_is_refused(self):
        load_signal_pb2()
        # The node pins the real server's id; the rogue has its own key.
        self.lab.start_server()
        real_id = self.lab.server_id()
        self.lab.server.stop()
        self.lab.procs.remove(self.lab.server)
        self.rogue = RogueSignal(self.lab.signal_port)
        node, admin = self.lab.node(
            "n", extra="")
        node.stop()
        cfg = os.path.join(self.lab.dir, "n.toml")
        with open(cfg) as f:
            text = f.read()
        with open(cfg, "w") as f:
            f.write(text.replace("[signal]\n", f'[signal]\nserver_id = "{real_id}"\n'))
        node.start()
        self.assert_refused(admin, real_id, self.rogue.server_id)
        time.sleep(0.5)
        self.assertEqual(self.rogue.logins, [], "the node sent its Login to the rogue")

    def test_first_use_stores_the_id_and_a_later_key_is_refused(self):
        self.lab.start_server()
        first = self.lab.server_id()
        node, admin = self.lab.node("n")
        wait_until(lambda: online(admin), 10, "the node online")
        stored = os.path.join(self.lab.dir, "n.key.server_id")
        with open(stored) as f:
            self.assertEqual(f.read().strip(), first)
        self.assertEqual(node.log_text().count("trusts signaling server"), 1)
        # Another server, with another key, at the same address.
        self.lab.server.kill()
        self.lab.procs.remove(self.lab.server)
        os.rename(self.lab.server_key, self.lab.server_key + ".old")
        self.lab.start_server()
        second = self.lab.server_id()
        self.assertNotEqual(first, second)
        self.assert_refused_after_online(admin, first, second)
        self.assertEqual(node.log_text().count("trusts signaling server"), 1)
        with open(stored) as f:
            self.assertEqual(f.read().strip(), first)

    def assert_refused_after_online(self, admin, expected, presented):
        st = wait_until(lambda: (lambda s: s if presented in s.get("lastError", "")
                                 else None)(signal_state(admin)),
                        15, "the refusal of the new key in the node's status")
        self.assertNotEqual(st["state"], "online")
        self.assertIn(expected, st["lastError"])


class CertificateOption(unittest.TestCase):
    """`p2proxy signal --cert FILE` presents an operator's chain for the key."""

    def setUp(self):
        self.lab = Lab()

    def tearDown(self):
        self.lab.close()

    def test_a_chain_for_the_key_is_served_and_one_for_another_key_refused(self):
        key, cert, key_id = make_server_cert(self.lab.dir, "operator")
        _, other_cert, _ = make_server_cert(self.lab.dir, "other")
        r = run(["signal", "--listen", f"127.0.0.1:{free_port()}", "--key", key,
                 "--cert", other_cert], timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not for the server key", r.stderr)
        self.assertIn(other_cert, r.stderr)
        server = self.lab.spawn("signal-cert", [
            "signal", "--listen", f"127.0.0.1:{self.lab.signal_port}",
            "--key", key, "--cert", cert,
            "--token-file", os.path.join(self.lab.dir, "token"),
            "--admin", f"127.0.0.1:{self.lab.signal_admin}"])
        wait_until(lambda: http_get(
            f"http://127.0.0.1:{self.lab.signal_admin}/v1/status")[0] == 200,
            10, "the server with --cert")
        self.assertIn(key_id, server.log_text())
        node, admin = self.lab.node("n", extra="")
        node.stop()
        cfg = os.path.join(self.lab.dir, "n.toml")
        with open(cfg) as f:
            text = f.read()
        with open(cfg, "w") as f:
            f.write(text.replace("[signal]\n", f'[signal]\nserver_id = "{key_id}"\n'))
        node.start()
        wait_until(lambda: online(admin), 10, "the pinned node online")
        # Pinned: nothing is stored for first use.
        self.assertFalse(os.path.exists(os.path.join(self.lab.dir, "n.key.server_id")))


def bad_login(port, pb, stop):
    """One connection from 127.0.0.1 with a wrong token; waits for the close."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
            with ctx.wrap_socket(raw) as s:
                env = pb.Envelope()
                env.login.node_id = "a" * 52
                env.login.public_key = b"x"
                env.login.signature = b"y"
                env.login.token = "not-the-token"
                data = env.SerializeToString()
                s.sendall(struct.pack(">I", len(data)) + data)
                while not stop.is_set() and s.recv(4096):
                    pass
    except (OSError, ssl.SSLError):
        pass


class LockOut(unittest.TestCase):
    def setUp(self):
        self.lab = Lab()
        self.stop = threading.Event()
        self.threads = []

    def tearDown(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)
        self.lab.close()

    def test_a_node_logs_in_within_3s_while_its_address_floods_bad_logins(self):
        pb = load_signal_pb2()
        self.lab.start_server()
        port = self.lab.signal_port

        def attacker():
            # 20 connections a second, each with a wrong token.
            while not self.stop.is_set():
                t0 = time.monotonic()
                t = threading.Thread(target=bad_login, args=(port, pb, self.stop),
                                     daemon=True)
                t.start()
                self.threads.append(t)
                time.sleep(max(0.0, 0.05 - (time.monotonic() - t0)))

        a = threading.Thread(target=attacker, daemon=True)
        a.start()
        self.threads.append(a)
        time.sleep(4)  # 80 failures: far past the 30 a minute per address
        t0 = time.monotonic()
        node, admin = self.lab.node("victim")
        wait_until(lambda: online(admin), 3, "the node online despite the flood")
        self.assertLess(time.monotonic() - t0, 3.0)
        time.sleep(2)
        self.assertTrue(online(admin), "the node was knocked off")
        self.stop.set()
        srv = status(self.lab.signal_admin)
        self.assertGreaterEqual(int(srv["loginFailures"]), 80)
        # Refusals from one address are logged once a minute, with a count.
        log = self.lab.server.log_text()
        self.assertLessEqual(log.count("login from 127.0.0.1"), 2, log[-2000:])


class SilentFlood(unittest.TestCase):
    """Connections that never finish a login count only once they fail (the
    login timeout), and a limited address keeps only a few of them open."""

    def setUp(self):
        self.lab = Lab()
        self.socks = []

    def tearDown(self):
        for s in self.socks:
            s.close()
        self.lab.close()

    def pending(self):
        st = status(self.lab.signal_admin)
        server = next(a for a in st["actors"] if a["name"] == "signal_server")
        return int(server["fields"]["pending_logins"])

    def test_unfinished_logins_are_bounded_and_a_node_still_gets_in(self):
        self.lab.start_server()
        t_end = time.monotonic() + 13  # past the 10 s login timeout
        while time.monotonic() < t_end:
            try:
                self.socks.append(socket.create_connection(
                    ("127.0.0.1", self.lab.signal_port), timeout=3))
            except OSError:
                pass
            time.sleep(0.05)
        # About 60 of them timed out (failures, past the budget of 30): the
        # address is limited to 8 unfinished logins, the rest were evicted.
        self.assertLessEqual(self.pending(), 8 + 2)
        t0 = time.monotonic()
        node, admin = self.lab.node("victim")
        wait_until(lambda: online(admin), 3, "the node online despite the flood")
        self.assertLess(time.monotonic() - t0, 3.0)


class TokenFiles(unittest.TestCase):
    def setUp(self):
        self.lab = Lab()

    def tearDown(self):
        self.lab.close()

    def test_the_server_refuses_a_token_file_others_can_read(self):
        token = os.path.join(self.lab.dir, "token")
        os.chmod(token, 0o644)
        r = run(["signal", "--listen", f"127.0.0.1:{free_port()}",
                 "--key", self.lab.server_key, "--token-file", token], timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(token, r.stderr)
        self.assertIn(f"chmod 600 {token}", r.stderr)

    def test_the_node_refuses_a_token_file_its_group_can_read(self):
        token = os.path.join(self.lab.dir, "node.token")
        with open(token, "w") as f:
            f.write("t\n")
        os.chmod(token, 0o640)
        cfg = os.path.join(self.lab.dir, "n.toml")
        with open(cfg, "w") as f:
            f.write(f'[signal]\nserver = "127.0.0.1:{free_port()}"\n'
                    f'token_file = "node.token"\n')
        r = run(["node", "--config", cfg], timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"{cfg}:3: signal.token_file", r.stderr)
        self.assertIn(f"chmod 600 {token}", r.stderr)
        os.chmod(token, 0o600)
        self.lab.start_server()

    def test_an_inline_token_in_a_world_readable_config_is_warned_about(self):
        self.lab.start_server()
        node, admin = self.lab.node("loose")
        wait_until(lambda: online(admin), 10, "the node online")
        self.assertIn("every local user can read", node.log_text())
        cfg = os.path.join(self.lab.dir, "tight.toml")
        tight, t_admin = self.lab.node("tight")
        tight.stop()
        os.chmod(cfg, 0o600)
        tight.start()
        wait_until(lambda: online(t_admin), 10, "the node online")
        self.assertNotIn("every local user can read", tight.log_text().split(
            "stops:")[-1])


if __name__ == "__main__":
    unittest.main()
