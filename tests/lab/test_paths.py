"""Sessions that move to a new path without losing a byte (issue 12, items 2 and 3), in the NAT
lab (deploy/lab/lab.sh, tests/lab/natlab.py): a signaling server and coturn in pub, node A behind
NAT A exporting `bulk` (tests/lab/stallprobe.py serving pseudo-random bytes at a fixed rate), node B
behind NAT B with a `tcp` listener for it; a real TCP client on hostB fetches through B's listener
and checks the SHA-256 of what arrives. Both NATs are endpoint-independent (a direct pair works).

  1. Black hole: NAT A drops what node B sends on the session's current pair (its address and
     port) for 20 s. Node A hears nothing while data is in flight, runs an ICE restart (a new
     agent, new ports, so a new pair the rule does not match) and the transfer moves on during
     the black hole: more than 16 MiB arrive while the rule is in place; it completes byte-exact
     on the same session, pathHistory has a `restart`, and QUIC migrated to the new pair
     (status: quicPath, migrations, the entry marked `migrated`), as in 2–4.
  2. NAT rebinding: NAT A's UDP conntrack entries are deleted and its masquerade moved to another
     port range, so node A's packets leave from a new external port and node B's replies to the
     old one are dropped. The transfer resumes within 10 s and completes byte-exact on the same
     session; pathHistory says restart (then QUIC migrated) or rebinding.
  3. Relay to direct: direct UDP between the two NATs is blocked before the session opens, the
     relay (coturn) is not: the session comes up relayed. 12 s later (ICE's own checks are over
     and the session's first probe for a direct pair failed) the block is lifted: within 30 s both
     nodes show a direct pair (found by the session's probe, an ICE restart without TURN), pathHistory has an `upgrade`, and the transfer running across the
     change completes byte-exact on the same session.
  4. coturn restarted under a relayed session (direct UDP still blocked): its allocations are
     gone, the session restarts ICE with new ones and the transfer moves on within 15 s of the
     restart, relayed on a new pair, byte-exact on the same session.

Needs root and the p2proxy binary ($P2PROXY_BIN, else the newest build*/p2proxy). Not root:
every test skips, except under CI=true, where they fail.

    cd tests/lab && CI=true P2PROXY_BIN=../../build/p2proxy python3 -m unittest -v test_paths
"""
import os
import sys
import time
import unittest

import bulkpair
import natlab
from bulkpair import MIB, NATB_WAN


class Paths(bulkpair.BulkPair):
    PREFIX = "tp"
    TABLE = "paths"
    NODE_EXTRA = "\n[debug]\ntest_resources = true\n"

    def setUp(self):
        self.bin = natlab.require_lab(self, "lab path tests", tools=("conntrack",))
        self.t0 = time.monotonic()

    # --- 1 ---------------------------------------------------------------------------------
    def test_1_black_hole_20s_restarts_and_moves_on(self):
        self.start(nbytes=320 * MIB)
        try:
            th, result, progress = self.fetch(timeout=150)
            self.wait_fetched(th, progress, 8 * MIB)
            first = self.row("B")
            a_row = self.row("A")
            self.assertIsNotNone(a_row, "no session at A during the transfer")
            remote = a_row.get("remoteAddress", "")
            host, _, port = remote.rpartition(":")
            self.assertTrue(port.isdigit(), "A's remote address: %r" % a_row)
            self.note("black hole for %s (A's pair %s)" % (remote, self.pair(a_row)))
            self.add_drop("natA", 'iifname "wan" ip saddr %s udp sport %s drop' % (host, port))
            t_drop = time.monotonic()
            at_drop = self.fetched(progress)
            time.sleep(18)
            during = self.fetched(progress) - at_drop
            a_after = self.row("A") or {}
            self.note("%.1f MiB arrived in the 18 s of the black hole; A now on %s; A's "
                      "pathHistory %r" % (during / MIB, self.pair(a_after),
                                          self.reasons("A")))
            time.sleep(max(0.0, 20 - (time.monotonic() - t_drop)))
            self.clear_drops("natA")
            self.assertGreater(during, 16 * MIB,
                               "the transfer did not move on while the old pair was dead")
            self.assertNotEqual(a_after.get("remoteAddress"), remote, a_after)
            self.finish(th, result, first)
            for n in ("A", "B"):
                self.assertIn("restart", self.reasons(n), "%s: %r" % (n, self.row(n)))
                self.assert_migrated(n)
        except BaseException:
            sys.stderr.write(self.lab.logs(120) + "\n")
            raise

    # --- 2 ---------------------------------------------------------------------------------
    def test_2_nat_rebinding_resumes_within_10s(self):
        self.start(nbytes=160 * MIB)
        try:
            th, result, progress = self.fetch(timeout=120)
            self.wait_fetched(th, progress, 8 * MIB)
            first = self.row("B")
            a_row = self.row("A")
            self.note("before: A on %s" % self.pair(a_row))
            # A new external port for everything node A sends from now on: a range that
            # does not hold the current one (masquerade keeps a port that fits the range).
            port = int(str(a_row.get("localAddress", "")).rpartition(":")[2] or 0)
            lo = 50000 if 40000 <= port <= 40999 else 40000
            self.nft("natA", "flush chain ip lab postrouting",
                     'add rule ip lab postrouting oifname "wan" meta l4proto udp '
                     'masquerade to :%d-%d' % (lo, lo + 999),
                     'add rule ip lab postrouting oifname "wan" masquerade')
            r = self.lab.in_ns("natA", ["conntrack", "-D", "-p", "udp"], 10)
            t_flush = time.monotonic()
            at_flush = self.fetched(progress)
            self.note("conntrack -D -p udp: %s" % (r.stderr.strip() or r.stdout.strip()))
            self.lab.wait("1 MiB more after the rebinding",
                          lambda: self.fetched(progress) >= at_flush + MIB, 10, period=0.05)
            self.note("resumed %.1fs after the rebinding" % (time.monotonic() - t_flush))
            self.finish(th, result, first)
            a_after = self.row("A")
            self.note("after: A on %s; pathHistory %r" % (self.pair(a_after),
                                                         self.reasons("A")))
            self.assertTrue({"restart", "rebinding"} & set(self.reasons("A")),
                            self.reasons("A"))
            if "restart" in self.reasons("A"):
                for n in ("A", "B"):
                    self.assert_migrated(n)
        except BaseException:
            sys.stderr.write(self.lab.logs(120) + "\n")
            raise

    # --- 3 ---------------------------------------------------------------------------------
    def start_relayed(self):
        """Direct UDP between the NATs dropped at NAT A, the relay allowed: a transfer runs on a
        relayed session. Returns the fetch's (thread, result, progress) and B's first row."""
        self.start(nbytes=320 * MIB,
                   before_nodes=lambda: self.add_drop(
                       "natA", 'ip daddr %s meta l4proto udp drop' % NATB_WAN))
        th, result, progress = self.fetch(timeout=150)
        self.wait_fetched(th, progress, 8 * MIB, timeout=60)
        first = self.row("B")
        self.assertIn("relay", (first.get("localCandidateType"),
                                first.get("remoteCandidateType")),
                      "the session did not start relayed: %r" % first)
        return th, result, progress, first

    def test_3_relayed_session_upgrades_to_direct(self):
        try:
            th, result, progress, first = self.start_relayed()
            # Long enough for ICE to have given the direct pairs up (its checks stop once it
            # has completed) and for the session's first probe to fail against the block.
            time.sleep(12)
            self.assertIn("relay", (self.row("B").get("localCandidateType"),
                                    self.row("B").get("remoteCandidateType")), self.row("B"))
            self.clear_drops("natA")
            t_lift = time.monotonic()

            def direct():
                rows = [self.row(n) or {} for n in ("A", "B")]
                return all(r and "relay" not in (r.get("localCandidateType"),
                                                 r.get("remoteCandidateType"))
                           for r in rows)
            self.lab.wait("a direct pair on both nodes", direct, 30, period=0.25)
            self.note("direct %.1fs after the block was lifted: B on %s" %
                      (time.monotonic() - t_lift, self.pair(self.row("B"))))
            self.finish(th, result, first)
            for n in ("A", "B"):
                self.assertIn("upgrade", self.reasons(n), "%s: %r" % (n, self.row(n)))
                self.assert_migrated(n)
            probes = 0
            for n in ("A", "B"):
                with open(self.lab.state_file("node%s.log" % n), errors="replace") as f:
                    probes += f.read().count("looks for a direct pair")
            self.assertGreater(probes, 0, "no probe for a direct pair was started")
        except BaseException:
            sys.stderr.write(self.lab.logs(120) + "\n")
            raise

    # --- 4 ---------------------------------------------------------------------------------
    def test_4_coturn_restart_under_a_relayed_session(self):
        try:
            th, result, progress, first = self.start_relayed()
            before = self.pair(first)
            # The lab's coturn (lab.sh start_turn), killed and started anew: every allocation
            # of the running session is gone.
            self.lab.lab("kill", "turnserver")
            t_kill = time.monotonic()
            log = os.path.join(self.lab.tmp, "coturn2.log")
            self.lab.lab("spawn", "pub", "turnserver2", "turnserver", "-n",
                         "--listening-ip", natlab.PUB_IP, "--relay-ip", natlab.PUB_IP,
                         "--listening-port", "3478", "--min-port", "49152",
                         "--max-port", "49199", "--lt-cred-mech",
                         "--user", "%s:%s" % (natlab.TURN_USER, natlab.TURN_PASS),
                         "--realm", "p2proxy.lab", "--fingerprint", "--no-tls", "--no-dtls",
                         "--no-cli", "--no-rfc5780", "--no-software-attribute",
                         "--allowed-peer-ip=198.18.0.0-198.19.255.255",
                         "--userdb", os.path.join(self.lab.tmp, "turndb2"),
                         "--pidfile", os.path.join(self.lab.tmp, "turnserver2.pid"),
                         "--log-file", log, "--simple-log", "--no-stdout-log")
            at_kill = self.fetched(progress)
            self.lab.wait("1 MiB more after the coturn restart",
                          lambda: self.fetched(progress) >= at_kill + MIB, 15, period=0.05)
            took = time.monotonic() - t_kill
            row = self.row("B")
            self.note("relayed again %.1fs after the coturn restart: %s (was %s)" %
                      (took, self.pair(row), before))
            self.assertIn("relay", (row.get("localCandidateType"),
                                    row.get("remoteCandidateType")), row)
            self.assertNotEqual(self.pair(row), before, "still the old allocation")
            self.finish(th, result, first)
            self.assertIn("restart", self.reasons("B"), self.row("B"))
            for n in ("A", "B"):
                self.assert_migrated(n)
        except BaseException:
            sys.stderr.write(self.lab.logs(120) + "\n")
            raise


if __name__ == "__main__":
    unittest.main()
