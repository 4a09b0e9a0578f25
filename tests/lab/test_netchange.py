"""A change of a node's own addresses moves its sessions at once (issue 12, items 2 and 3: "a local
address or interface change (netlink)", "and again after a network change"), in the NAT lab
(deploy/lab/lab.sh, tests/lab/natlab.py): a signaling server and coturn in pub, node A behind
NAT A exporting `bulk` (tests/lab/stallprobe.py serving pseudo-random bytes at a fixed rate), node
B behind NAT B with a `tcp` listener for it; a real TCP client on hostB fetches through B's listener
and checks the SHA-256 of what arrives. Both NATs are endpoint-independent.

  1. Relayed, then an added address: direct UDP between the two NATs is blocked before the
     session opens (the relay is not), so it comes up relayed; both nodes set
     `[session] upgrade_first = "10m"`, so no scheduled probe for a direct pair comes during the
     test. A veth pair (an excluded kind of interface) made and deleted on hostA changes nothing
     (no "network change" in node A's log). Then the block is lifted and hostA's eth0 gets a
     second address: node A logs the change, its session probes for a direct pair at once and
     moves to one (both nodes show a direct pair, pathHistory has `upgrade`, node A's log says
     the generation that carries it was started by the network change), and the transfer running
     across it completes byte-exact on the same session.
  2. Renumbered under a transfer: hostA's eth0 gets a new address, the one the session (and the
     signaling link) uses is deleted, the default route is set again. Node A restarts ICE at
     once ("local address 198.18.1.2 went away"), its signaling link logs in again from the new
     address, and the transfer resumes and completes byte-exact on the same session; pathHistory
     has a `restart`.

Needs root and the p2proxy binary ($P2PROXY_BIN, else the newest build*/p2proxy). Not root:
every test skips, except under CI=true, where they fail.

    cd tests/lab && CI=true P2PROXY_BIN=../../build/p2proxy python3 -m unittest -v test_netchange
"""
import re
import sys
import time
import unittest

import bulkpair
import natlab
from bulkpair import MIB, NATB_WAN
from natlab import num

HOSTA_IP = "198.18.1.2"         # hostA's eth0 (lab.sh)
HOSTA_NEW = "198.18.1.3"        # the address a test gives it
NATA_LAN = "198.18.1.1"


class NetChange(bulkpair.BulkPair):
    PREFIX = "tn"
    RATE = 10 * MIB
    SEED = 23
    TABLE = "netchange"
    # No scheduled probe for a direct pair within a test: only a network change starts one.
    NODE_EXTRA = '\n[session]\nupgrade_first = "10m"\n'

    def setUp(self):
        self.bin = natlab.require_lab(self, "lab network-change tests")
        self.t0 = time.monotonic()

    def node_log(self, n):
        with open(self.lab.state_file("node%s.log" % n), errors="replace") as f:
            return f.read()

    # --- 1 ---------------------------------------------------------------------------------
    def test_1_relayed_session_probes_when_an_address_is_added(self):
        try:
            self.start(nbytes=200 * MIB, before_nodes=lambda: self.add_drop(
                "natA", "ip daddr %s meta l4proto udp drop" % NATB_WAN))
            th, result, progress = self.fetch(timeout=120)
            self.wait_fetched(th, progress, 8 * MIB, timeout=60)
            first = self.row("B")
            self.assertTrue(self.relayed(first), "the session did not start relayed: %r" % first)

            # An excluded kind of interface (veth*) comes and goes: not a network change.
            self.run_in("hostA", "ip", "link", "add", "vethnc0", "type", "veth",
                        "peer", "name", "vethnc1")
            self.run_in("hostA", "ip", "addr", "add", "198.18.66.1/30", "dev", "vethnc0")
            self.run_in("hostA", "ip", "link", "set", "vethnc0", "up")
            self.run_in("hostA", "ip", "link", "set", "vethnc1", "up")
            time.sleep(1.0)
            self.run_in("hostA", "ip", "link", "del", "vethnc0")
            time.sleep(1.5)  # past the watch's debounce (400 ms, at most 2 s)
            self.assertNotIn("network change", self.node_log("A"),
                             "a veth pair counted as a network change")
            self.assertEqual(num(self.row("A").get("networkChanges")), 0, self.row("A"))

            self.clear_drops("natA")
            time.sleep(1.0)
            self.assertTrue(self.relayed(self.row("B")),
                            "direct before any network change: %r" % self.row("B"))
            self.run_in("hostA", "ip", "addr", "add", HOSTA_NEW + "/24", "dev", "eth0")
            t_add = time.monotonic()

            def direct():
                rows = [self.row(n) or {} for n in ("A", "B")]
                return all(r and not self.relayed(r) for r in rows)
            self.lab.wait("a direct pair on both nodes", direct, 20, period=0.25)
            self.note("direct %.1fs after the address was added: A on %s" %
                      (time.monotonic() - t_add, self.pair(self.row("A"))))
            self.finish(th, result, first)

            log_a = self.node_log("A")
            self.assertIn("network change: +eth0 %s" % HOSTA_NEW, log_a)
            carried = [line for line in log_a.splitlines() if "carries it now" in line]
            self.note("node A: %s" % carried)
            self.assertTrue(any("network change: looks for a direct pair" in line
                                for line in carried),
                            "no generation started by the network change carries the "
                            "session: %r" % carried)
            self.assertIn("upgrade", self.reasons("A"), self.row("A"))
            for n in ("A", "B"):
                self.assert_migrated(n)
            self.assertGreaterEqual(num(self.row("A").get("networkChanges")), 1, self.row("A"))
            self.assertGreaterEqual(
                num(self.lab.status("hostA").get("sessions", {}).get("networkChanges")), 1)
        except BaseException:
            sys.stderr.write(self.lab.logs(120) + "\n")
            raise

    # --- 2 ---------------------------------------------------------------------------------
    def test_2_renumbered_address_restarts_at_once(self):
        try:
            self.start(nbytes=160 * MIB)
            th, result, progress = self.fetch(timeout=120)
            self.wait_fetched(th, progress, 8 * MIB)
            first = self.row("B")
            self.note("before: A on %s" % self.pair(self.row("A")))
            # The new address first (kept when the primary goes), then the old one away.
            self.run_in("hostA", "sysctl", "-qw", "net.ipv4.conf.eth0.promote_secondaries=1")
            self.run_in("hostA", "ip", "addr", "add", HOSTA_NEW + "/24", "dev", "eth0")
            self.run_in("hostA", "ip", "addr", "del", HOSTA_IP + "/24", "dev", "eth0")
            self.run_in("hostA", "ip", "route", "replace", "default", "via", NATA_LAN,
                        "dev", "eth0")
            t_move = time.monotonic()
            at_move = self.fetched(progress)
            self.lab.wait("1 MiB more after the renumbering",
                          lambda: self.fetched(progress) >= at_move + MIB, 20, period=0.05)
            self.note("resumed %.1fs after the renumbering" % (time.monotonic() - t_move))
            self.finish(th, result, first)

            a_row = self.row("A")
            self.note("after: A on %s; pathHistory %r" % (self.pair(a_row), self.reasons("A")))
            log_a = self.node_log("A")
            self.note("node A:\n    " + "\n    ".join(
                line for line in log_a.splitlines()
                if re.search(r"network change|ICE generation|went away|logged in", line)))
            self.assertRegex(log_a, r"network change: .*-eth0 %s" % re.escape(HOSTA_IP))
            self.assertRegex(log_a, r"starts ICE generation \d+: local address %s went away"
                             % re.escape(HOSTA_IP))
            self.assertIn("restart", self.reasons("A"), a_row)
            for n in ("A", "B"):
                self.assert_migrated(n)
            self.assertGreaterEqual(num(a_row.get("networkChanges")), 1, a_row)
            # The signaling link left the dead address and logged in again.
            self.assertEqual(self.lab.status("hostA").get("signal", {}).get("state"), "online")
        except BaseException:
            sys.stderr.write(self.lab.logs(120) + "\n")
            raise


if __name__ == "__main__":
    unittest.main()
