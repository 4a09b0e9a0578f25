"""The NAT matrix's CI subset (issue #5): none, eim and sym NATs on each side, 9 pairs. For each
pair a fresh lab (deploy/lab/lab.sh, its own prefix) gets the signaling server and coturn in pub,
node A exporting a TCP server that sends one line on accept, node B with a `tcp` listener for it;
a client on hostB connects through B's listener (a cold open: no session yet) and must read the
line, then sends 1 MiB through a second connection (a warm open over the same session).

Asserted: connected (the line arrives intact, the 1 MiB is taken by the exported server), and
the path class both nodes report for the session:
  direct (host/srflx/prflx on both ends) where one side is public (`none`) or both map
  endpoint-independently (eim x eim);
  relayed through coturn otherwise (eim x sym, sym x sym), over TURN/UDP (the 1 MiB crossed no
  TCP connection to coturn).
Cold-open times are printed, not asserted (the targets live in the benchmark,
tests/bench/nat_matrix.py, and docs/benchmarks.md).

Needs root and the p2proxy binary ($P2PROXY_BIN, else the newest build*/p2proxy). Not root:
every test skips, except under CI=true, where they fail.

    cd tests/lab && CI=true P2PROXY_BIN=../../build/p2proxy python3 -m unittest -v test_nat_matrix
"""
import itertools
import os
import sys
import time
import unittest

import natlab

SUBSET = ("none", "eim", "sym")
_counter = itertools.count()


class NatMatrix(unittest.TestCase):
    def setUp(self):
        self.bin = natlab.require_lab(self, "lab NAT matrix tests")

    def note(self, msg):
        sys.stderr.write("  [%s] %s\n" % (self._testMethodName, msg))
        sys.stderr.flush()

    def check_pair(self, nat_a, nat_b):
        prefix = "tn%d-%d" % (os.getpid() % 100000, next(_counter))
        lab = natlab.NatLab(self.bin, prefix, nat_a, nat_b)
        self.addCleanup(lab.down)
        t0 = time.monotonic()
        try:
            res = lab.measure()
            self.assert_pair(lab, res)
        except BaseException:
            sys.stderr.write("\n===== %s x %s (prefix %s): logs =====\n%s\n" % (
                nat_a, nat_b, prefix, lab.logs(200)))
            raise
        self.note("%s x %s: %s, %s; cold open %.3f s (ICE %s s, QUIC handshake %s s), warm "
                  "%.3f s; lab+nodes up %.1f s, pair %.1f s" % (
                      nat_a, nat_b, res["class"], res["detail"], res["cold_s"], res.get("ice_s"),
                      res.get("quic_s"), res["warm_s"], res["up_s"], time.monotonic() - t0))

    def assert_pair(self, lab, res):
        pair = "%s x %s" % (res["nat_a"], res["nat_b"])
        self.assertTrue(res["connected"], "%s: the client got no banner through the tunnel: %r"
                        % (pair, res.get("cold")))
        self.assertEqual(res["sessions_before"], 0,
                         "%s: B had a session before the client connected (not a cold open)"
                         % pair)
        self.assertFalse(res["error"], "%s: %s (warm open: %r)" % (pair, res["error"],
                                                                   res.get("warm")))
        want = natlab.expected_class(res["nat_a"], res["nat_b"])
        for who, row in (("B", res["row_b"]), ("A", res.get("row_a"))):
            self.assertIsNotNone(row, "%s: node %s has no session row for its peer" % (pair, who))
            self.assertIn(row.get("state"), natlab.UP_STATES, "%s: %s's session: %r" %
                          (pair, who, row))
            types = (row.get("localCandidateType"), row.get("remoteCandidateType"))
            if want == "direct":
                for t in types:
                    self.assertIn(t, natlab.DIRECT_TYPES, "%s: %s's path %s, expected direct: %r"
                                  % (pair, who, "-".join(map(str, types)), row))
            else:
                self.assertIn("relay", types, "%s: %s's path %s, expected relayed: %r" %
                              (pair, who, "-".join(map(str, types)), row))
                side = "localAddress" if types[0] == "relay" else "remoteAddress"
                host, _, port = (row.get(side) or ":").rpartition(":")
                self.assertEqual(host, natlab.PUB_IP, "%s: %s's relay %s is not coturn's: %r" %
                                 (pair, who, side, row))
                self.assertIn(int(port or 0), range(49152, 49200),
                              "%s: %s's relay port is not coturn's: %r" % (pair, who, row))
        self.assertEqual(natlab.coarse(res["class"]), want,
                         "%s: path class %s (%s), expected %s; TURN-over-TCP bytes during the "
                         "1 MiB probe: %r" % (pair, res["class"], res["detail"], want,
                                              res.get("turn_tcp_delta")))


def _make(nat_a, nat_b):
    def test(self):
        self.check_pair(nat_a, nat_b)
    test.__doc__ = "%s x %s: connected, %s" % (nat_a, nat_b, natlab.expected_class(nat_a, nat_b))
    return test


for _i, (_a, _b) in enumerate(itertools.product(SUBSET, SUBSET)):
    setattr(NatMatrix, "test_%d_%s_x_%s" % (_i + 1, _a, _b), _make(_a, _b))


if __name__ == "__main__":
    unittest.main(verbosity=2)
