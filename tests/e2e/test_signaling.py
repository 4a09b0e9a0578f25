"""A signaling server and real nodes on loopback: login, look-up, signals
between nodes, surviving a server restart, and refusing a wrong token."""
import os
import signal
import time
import unittest

from harness import Lab, http_get, online, run, status, wait_until


class TwoNodes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab()
        cls.lab.start_server()
        cls.a, cls.a_admin = cls.lab.node("node-a", exports=["cam1", "web"])
        cls.b, cls.b_admin = cls.lab.node("node-b", exports=["nas"])
        cls.a_id = wait_until(lambda: online(cls.a_admin), 10, "node A online")["nodeId"]
        cls.b_id = wait_until(lambda: online(cls.b_admin), 10, "node B online")["nodeId"]

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()

    def test_01_both_nodes_are_listed_by_the_server(self):
        st = wait_until(lambda: (lambda s: s if len(s.get("nodes", [])) == 2 else None)(
            status(self.lab.signal_admin)), 5, "two nodes online at the server")
        ids = {n["nodeId"]: n for n in st["nodes"]}
        self.assertIn(self.a_id, ids)
        self.assertIn(self.b_id, ids)
        self.assertEqual(sorted(ids[self.a_id]["exports"]), ["cam1", "web"])

    def test_02_node_id_matches_the_key_on_disk(self):
        r = run(["id", "--key", os.path.join(self.lab.dir, "node-a.key")])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), self.a_id)
        mode = os.stat(os.path.join(self.lab.dir, "node-a.key")).st_mode & 0o777
        self.assertEqual(mode, 0o600)

    def test_03_lookup_finds_the_other_nodes_export(self):
        code, body = http_get(f"http://127.0.0.1:{self.b_admin}/v1/lookup/cam1")
        self.assertEqual(code, 200, body)
        self.assertIn(self.a_id, body)
        code, body = http_get(f"http://127.0.0.1:{self.a_admin}/v1/lookup/nas")
        self.assertEqual(code, 200, body)
        self.assertIn(self.b_id, body)

    def test_04_lookup_of_an_unknown_name_is_empty_not_an_error(self):
        code, body = http_get(f"http://127.0.0.1:{self.b_admin}/v1/lookup/nothing-here")
        self.assertEqual(code, 200, body)
        self.assertNotIn(self.a_id, body)

    def test_05_a_signal_sent_by_a_arrives_at_b(self):
        before = int(status(self.b_admin)["signal"]["signalsIn"])
        code, body = http_get(f"http://127.0.0.1:{self.a_admin}/v1/probe/{self.b_id}")
        self.assertEqual(code, 200, body)
        self.assertIn("rttMicroseconds", body)
        self.assertGreater(int(status(self.b_admin)["signal"]["signalsIn"]), before)

    def test_06_signal_to_an_offline_node_says_so(self):
        offline = "a" * 52
        code, body = http_get(f"http://127.0.0.1:{self.a_admin}/v1/probe/{offline}")
        self.assertNotEqual(code, 200, body)
        self.assertIn("not online", body)

    def test_07_status_command_prints_for_people_and_scripts(self):
        r = run(["status", "--admin", f"127.0.0.1:{self.a_admin}"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(self.a_id, r.stdout)
        self.assertIn("online", r.stdout)
        r = run(["status", "--admin", f"127.0.0.1:{self.a_admin}", "--json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('"nodeId"', r.stdout)

    def test_08_metrics_are_prometheus_text(self):
        code, body = http_get(f"http://127.0.0.1:{self.a_admin}/metrics")
        self.assertEqual(code, 200)
        self.assertIn("# TYPE p2proxy_signal_reconnects_total counter", body)
        self.assertIn("p2proxy_signal_online 1", body)
        code, body = http_get(f"http://127.0.0.1:{self.lab.signal_admin}/metrics")
        self.assertEqual(code, 200)
        self.assertIn("p2proxy_signal_logins_total", body)

    def test_09_server_restart_both_nodes_back_within_5s_with_exports(self):
        self.lab.server.kill()
        self.lab.procs.remove(self.lab.server)
        wait_until(lambda: not online(self.a_admin) and not online(self.b_admin),
                   5, "both nodes to notice the server is gone")
        self.lab.start_server()
        t0 = time.monotonic()
        wait_until(lambda: online(self.a_admin) and online(self.b_admin), 5,
                   "both nodes logged in again")
        code, body = http_get(f"http://127.0.0.1:{self.b_admin}/v1/lookup/cam1")
        self.assertEqual(code, 200, body)
        self.assertIn(self.a_id, body)
        self.assertLess(time.monotonic() - t0, 5.0)
        st = status(self.a_admin)["signal"]
        self.assertGreaterEqual(int(st["reconnects"]), 1)


class Refusals(unittest.TestCase):
    def setUp(self):
        self.lab = Lab()
        self.lab.start_server()

    def tearDown(self):
        self.lab.close()

    def test_wrong_token_is_refused_with_a_clear_message(self):
        node, admin = self.lab.node("intruder", token="not-the-token")
        # A refused login and its reason (the status is read while the link
        # may be between attempts: wait for both fields).
        st = wait_until(lambda: (lambda s: s if s["signal"].get("loginFailures")
                                 and s["signal"].get("lastError") else None)(
            status(admin)), 10, "a refused login and its reason")
        self.assertNotEqual(st["signal"]["state"], "online")
        self.assertIn("wrong network token", st["signal"]["lastError"])
        wait_until(lambda: "wrong network token" in node.log_text(), 5,
                   "the refusal in the node's log")
        srv = status(self.lab.signal_admin)
        self.assertEqual(srv.get("nodes", []), [])

    def test_second_login_with_the_same_key_replaces_the_first(self):
        first, admin1 = self.lab.node("twin")
        wait_until(lambda: online(admin1), 10, "the first twin online")
        # The same key file under another config: a second process, same id.
        second, admin2 = self.lab.node("twin2", extra="")
        second.stop()
        cfg = os.path.join(self.lab.dir, "twin2.toml")
        with open(cfg) as f:
            text = f.read().replace('key = "twin2.key"', 'key = "twin.key"')
        with open(cfg, "w") as f:
            f.write(text)
        second.start()
        wait_until(lambda: online(admin2), 10, "the second twin online")
        wait_until(lambda: "replaced" in status(admin1)["signal"]["lastError"],
                   10, "the first twin told it was replaced")


class CommandLine(unittest.TestCase):
    def test_keygen_refuses_to_overwrite_and_id_names_bad_files(self):
        lab = Lab()
        key = os.path.join(lab.dir, "k.key")
        r = run(["keygen", "--out", key])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(r.stdout.strip()), 52)
        r2 = run(["keygen", "--out", key])
        self.assertNotEqual(r2.returncode, 0)
        self.assertIn(key, r2.stderr)
        bad = os.path.join(lab.dir, "bad.key")
        with open(bad, "w") as f:
            f.write("garbage")
        os.chmod(bad, 0o600)
        r3 = run(["id", "--key", bad])
        self.assertNotEqual(r3.returncode, 0)
        self.assertIn(bad, r3.stderr)

    def test_config_error_names_file_line_and_key(self):
        lab = Lab()
        path = os.path.join(lab.dir, "bad.toml")
        with open(path, "w") as f:
            f.write('[signal]\nserver = "127.0.0.1:7000"\nsevrer_typo = 1\n')
        r = run(["node", "--config", path])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"{path}:3", r.stderr)
        self.assertIn("sevrer_typo", r.stderr)

    def test_status_without_a_node_says_what_to_check(self):
        from harness import free_port
        r = run(["status", "--admin", f"127.0.0.1:{free_port()}"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot reach the admin port", r.stderr)


if __name__ == "__main__":
    unittest.main()
