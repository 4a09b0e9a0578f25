"""Two real nodes and a signaling server on loopback open a peer session
(libnice ICE + QUIC) and carry SHA-256-checked data over it."""
import json
import unittest

from harness import Lab, http_get, online, status, wait_until

MiB = 1 << 20


class Sessions(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab()
        cls.lab.start_server()
        extra = '[debug]\ntest_resources = true\n'
        cls.a, cls.a_admin = cls.lab.node("node-a", extra=extra)
        cls.b, cls.b_admin = cls.lab.node("node-b", extra=extra)
        cls.a_id = wait_until(lambda: online(cls.a_admin), 10, "node A online")["nodeId"]
        cls.b_id = wait_until(lambda: online(cls.b_admin), 10, "node B online")["nodeId"]

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()

    def pump(self, admin, peer, nbytes, streams=1, resource="echo"):
        code, body = http_get(
            f"http://127.0.0.1:{admin}/v1/debug/pump/{peer}"
            f"?resource={resource}&bytes={nbytes}&streams={streams}", timeout=300)
        self.assertEqual(code, 200, body)
        return json.loads(body)

    def test_1_64_mib_each_way_over_one_stream(self):
        r = self.pump(self.a_admin, self.b_id, 64 * MiB)
        self.assertEqual(r["error"], "")
        self.assertEqual(r["sent"], 64 * MiB)
        self.assertEqual(r["received"], 64 * MiB)
        self.assertEqual(r["sentSha256"], r["receivedSha256"])
        self.assertIn(r["session"]["state"], ("ready", "lingering"))
        self.assertEqual(r["session"]["localCandidateType"], "host")

    def test_2_16_concurrent_streams(self):
        r = self.pump(self.a_admin, self.b_id, 4 * MiB, streams=16)
        self.assertEqual(r["error"], "")
        self.assertEqual(r["streamsOk"], 16)
        self.assertEqual(r["received"], 16 * 4 * MiB)

    def test_3_both_nodes_list_one_session_with_its_path(self):
        self.pump(self.a_admin, self.b_id, MiB)
        sa = status(self.a_admin)["sessions"]["sessions"]
        sb = status(self.b_admin)["sessions"]["sessions"]
        self.assertEqual(len(sa), 1, sa)
        self.assertEqual(len(sb), 1, sb)
        self.assertEqual(sa[0]["peer"], self.b_id)
        self.assertEqual(sb[0]["peer"], self.a_id)
        self.assertEqual(sa[0]["sessionId"], sb[0]["sessionId"])
        self.assertTrue(sa[0]["controlling"])
        self.assertFalse(sb[0]["controlling"])
        self.assertGreater(int(sa[0]["bytesSent"]), MiB)

    def test_4_the_peer_can_open_streams_on_the_same_session(self):
        r = self.pump(self.b_admin, self.a_id, MiB)
        self.assertEqual(r["error"], "")
        sb = status(self.b_admin)["sessions"]["sessions"]
        self.assertEqual(len(sb), 1, "B reused the session A opened")

    def test_5_source_resource_and_unknown_resource(self):
        r = self.pump(self.a_admin, self.b_id, 3 * MiB, resource="source")
        self.assertEqual(r["error"], "")
        self.assertEqual(r["received"], 3 * MiB)
        self.assertEqual(r["streamsOk"], 1)
        code, body = http_get(
            f"http://127.0.0.1:{self.a_admin}/v1/debug/pump/{self.b_id}"
            f"?resource=nothing&bytes=10", timeout=60)
        self.assertEqual(code, 200, body)
        self.assertIn("no resource named 'nothing'", json.loads(body)["error"])

    def test_6_offline_peer_is_a_clear_error(self):
        code, body = http_get(
            f"http://127.0.0.1:{self.a_admin}/v1/debug/pump/{'a' * 52}?bytes=10",
            timeout=60)
        self.assertNotEqual(code, 200, body)
        self.assertIn("offline", body)
        self.assertEqual(online(self.a_admin)["signal"]["state"], "online")

    def test_7_metrics_show_sessions_by_state_and_path(self):
        self.pump(self.a_admin, self.b_id, MiB)
        code, body = http_get(f"http://127.0.0.1:{self.a_admin}/metrics")
        self.assertEqual(code, 200)
        self.assertIn('p2proxy_sessions{state="', body)
        self.assertIn('path="direct"', body)
        self.assertIn("p2proxy_session_bytes_total", body)


if __name__ == "__main__":
    unittest.main()
