"""A lying signaling server cannot make a node talk to an impostor.

A node whose key does not match the id the signaling server claims is
refused: the handshake fails closed and nothing is carried.

Real p2proxy nodes log in to a rogue signaling server (rogue_signal.py) that
routes everything addressed to VICTIM's node id to MALLORY, a real node with
its own key, and forges MALLORY's signals as coming from VICTIM. Node A asks
for VICTIM and gets Mallory's ICE path; the QUIC handshake must refuse
Mallory's key. A positive control runs the same rogue server routing
honestly between A and a real B, and the transfer succeeds: the failure is
the identity check, not a server that cannot speak the protocol.
"""
import json
import os
import unittest

from harness import Lab, http_get, online, run, status, wait_until
from rogue_signal import RogueSignal, load_signal_pb2

KiB = 1 << 10
# Debug level: the STREAM SERVICE logs every stream it serves ("serves
# 'echo' to ..."), so a node's log shows whether it served anything.
EXTRA = ('[debug]\ntest_resources = true\n'
         '[session]\nconnect_timeout = "10s"\n'
         '[log]\nlevel = "debug"\n')


def keygen(lab, name):
    """Writes NAME.key in the lab dir (as Lab.node's config expects); its id."""
    r = run(["keygen", "--out", os.path.join(lab.dir, f"{name}.key")])
    if r.returncode != 0:
        raise AssertionError(f"keygen {name} failed: {r.stderr}")
    node_id = r.stdout.strip()
    assert len(node_id) == 52, node_id
    return node_id


class Impostor(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        load_signal_pb2()  # skips (or fails under CI=true) without protobuf

    def setUp(self):
        self.lab = Lab()
        self.rogue = None

    def tearDown(self):
        try:
            self.lab.close()  # SIGTERM, then SIGKILL, every node
        finally:
            if self.rogue is not None:
                self.rogue.close()

    def start(self, names, twist=None):
        """Starts the rogue server and real nodes NAMES; {name: (id, admin)}."""
        ids = {n: keygen(self.lab, n) for n in names}
        if twist is not None:
            twist = (ids.get(twist[0]) or twist[0], ids[twist[1]])
        self.rogue = RogueSignal(self.lab.signal_port, twist=twist)
        nodes = {}
        for n in names:
            _, admin = self.lab.node(n, extra=EXTRA)
            nodes[n] = (ids[n], admin)
        for n, (nid, admin) in nodes.items():
            st = wait_until(lambda: online(admin), 15, f"{n} online")
            self.assertEqual(st["nodeId"], nid)
            wait_until(lambda: self.rogue.online(nid), 5,
                       f"{n} logged in to the rogue server")
        return nodes

    def proc(self, name):
        return next(p for p in self.lab.procs if p.name == name)

    def pump(self, admin, peer, nbytes):
        return http_get(f"http://127.0.0.1:{admin}/v1/debug/pump/{peer}"
                        f"?resource=echo&bytes={nbytes}", timeout=60)

    def test_1_positive_control_honest_routing_carries_data(self):
        nodes = self.start(["node-a", "node-b"])
        (a_id, a_admin), (b_id, b_admin) = nodes["node-a"], nodes["node-b"]
        code, body = self.pump(a_admin, b_id, 256 * KiB)
        self.assertEqual(code, 200, body)
        r = json.loads(body)
        self.assertEqual(r["error"], "", r)
        self.assertEqual(r["received"], 256 * KiB)
        self.assertEqual(r["sentSha256"], r["receivedSha256"])
        self.assertEqual(r["session"]["peer"], b_id)
        self.assertIn(r["session"]["state"], ("ready", "lingering"))
        # The rogue server really carried the offer/answer/candidates.
        self.assertGreater(self.rogue.signals_routed, 2)
        self.assertEqual(self.rogue.signals_redirected, 0)
        sa = status(a_admin)["sessions"]
        self.assertNotIn("identity_mismatch", sa["openFailures"])
        sb = status(b_admin)["sessions"]
        self.assertEqual([s["peer"] for s in sb["sessions"]], [a_id])
        self.assertGreater(int(sb["sessions"][0]["bytesReceived"]), 256 * KiB)
        # The evidence used below ("serves 'echo'" in the log) exists when
        # a node does serve.
        self.assertIn("serves 'echo'", self.proc("node-b").log_text())
        self.assertIn("is ready via", self.proc("node-b").log_text())

    def test_2_server_substitutes_mallory_for_victim_and_is_refused(self):
        # VICTIM is a key nobody runs: only its id is known to A.
        victim = keygen(self.lab, "victim")
        nodes = self.start(["node-a", "mallory"], twist=(victim, "mallory"))
        (a_id, a_admin), (m_id, m_admin) = nodes["node-a"], nodes["mallory"]

        code, body = self.pump(a_admin, victim, 256 * KiB)
        self.assertNotEqual(code, 200, f"A carried data to an impostor: {body}")
        err = json.loads(body)["error"]
        self.assertIn(f"peer presented node id {m_id}, expected {victim}", err)

        # The attack really happened: A's offer went to Mallory, and
        # Mallory's answer and candidates reached A as if from VICTIM (so ICE
        # could succeed and the handshake was what refused it).
        self.assertGreater(self.rogue.signals_redirected, 0)
        self.assertGreater(self.rogue.signals_forged, 0)

        # A: no session to VICTIM, the failure is recorded as an identity
        # mismatch, and the closed session names both ids.
        sa = status(a_admin)["sessions"]
        self.assertEqual([s for s in sa["sessions"] if s["peer"] == victim], [],
                         sa)
        # Counted as a failed open of the identity class, never as a success.
        self.assertEqual(int(sa["opened"]), 1, sa)
        self.assertEqual(sa["openFailures"], {"identity_mismatch": "1"}, sa)
        closed = [s for s in sa["recentlyClosed"] if s["peer"] == victim]
        self.assertEqual(len(closed), 1, sa)
        self.assertIn(f"peer presented node id {m_id}, expected {victim}",
                      closed[0]["closeReason"])
        self.assertTrue(closed[0]["remoteAddress"],
                        "ICE found a path to Mallory before the refusal")
        self.assertNotIn("is ready via", self.proc("node-a").log_text())
        self.assertEqual(online(a_admin)["signal"]["state"], "online")

        # Mallory: its session from A ended with A's refusal, never became
        # ready, and served no stream.
        def mallory_closed():
            sm = status(m_admin)["sessions"]
            return sm if not sm["sessions"] and sm["recentlyClosed"] else None
        sm = wait_until(mallory_closed, 15, "Mallory's session to end")
        self.assertEqual(int(sm["accepted"]), 1, sm)
        row = sm["recentlyClosed"][-1]
        self.assertEqual(row["peer"], a_id)
        self.assertFalse(row["controlling"])
        self.assertIn("refused the TLS handshake with alert bad_certificate",
                      row["closeReason"])
        self.assertEqual(int(row["openStreams"]), 0)
        self.assertEqual(int(sm["openFailures"].get("handshake_failed", 0)), 1, sm)
        mlog = self.proc("mallory").log_text()
        self.assertNotIn("is ready via", mlog)
        self.assertNotIn("serves '", mlog)
        self.assertNotIn("refuses a stream", mlog)

    def test_3_mallory_posing_as_victim_cannot_open_a_session_to_a(self):
        # The other direction: Mallory opens, the server tells A the offer
        # comes from VICTIM. A is the QUIC server and checks the client's
        # key; Mallory must not get a session, and A must serve nothing.
        victim = keygen(self.lab, "victim")
        nodes = self.start(["node-a", "mallory"], twist=(victim, "mallory"))
        (a_id, a_admin), (m_id, m_admin) = nodes["node-a"], nodes["mallory"]

        code, body = self.pump(m_admin, a_id, 256 * KiB)
        self.assertNotEqual(code, 200, f"Mallory got a session to A: {body}")
        self.assertIn("peer refused the TLS handshake with alert bad_certificate",
                      json.loads(body)["error"])
        self.assertGreater(self.rogue.signals_forged, 0)
        self.assertGreater(self.rogue.signals_redirected, 0)

        def a_closed():
            s = status(a_admin)["sessions"]
            return s if not s["sessions"] and s["recentlyClosed"] else None
        sa = wait_until(a_closed, 15, "A's session from 'VICTIM' to end")
        self.assertEqual(int(sa["accepted"]), 1, sa)
        row = sa["recentlyClosed"][-1]
        self.assertEqual(row["peer"], victim)
        self.assertFalse(row["controlling"])
        self.assertIn(f"peer presented node id {m_id}, expected {victim}",
                      row["closeReason"])
        self.assertEqual(sa["openFailures"], {"identity_mismatch": "1"}, sa)
        alog = self.proc("node-a").log_text()
        self.assertNotIn("is ready via", alog)
        self.assertNotIn("serves '", alog)

        sm = status(m_admin)["sessions"]
        self.assertEqual(sm["sessions"], [], sm)
        self.assertEqual(sm["openFailures"], {"handshake_failed": "1"}, sm)
        self.assertNotIn("is ready via", self.proc("mallory").log_text())


if __name__ == "__main__":
    unittest.main()
