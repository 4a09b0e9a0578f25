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
import itertools
import os
import re
import sys
import threading
import time
import unittest

import natlab
import stallprobe
from natlab import num

PROBE = os.path.join(natlab.HERE, "stallprobe.py")
BULK_ADDR = "127.0.0.1:9002"    # stallprobe serve on hostA, exported as `bulk`
LISTEN_ADDR = "127.0.0.1:9000"  # node B's listener for `bulk`
NATB_WAN = "198.18.0.3"
HOSTA_IP = "198.18.1.2"         # hostA's eth0 (lab.sh)
HOSTA_NEW = "198.18.1.3"        # the address a test gives it
NATA_LAN = "198.18.1.1"
MIB = 1 << 20
RATE = 10 * MIB
_counter = itertools.count()


class NetChange(unittest.TestCase):
    def setUp(self):
        self.bin = natlab.require_lab(self, "lab network-change tests")
        self.t0 = time.monotonic()

    def note(self, msg):
        sys.stderr.write("  [%s] %s\n" % (self._testMethodName, msg))
        sys.stderr.flush()

    # --- the lab ------------------------------------------------------------------------
    def start(self, nbytes, before_nodes=None):
        prefix = "tn%d-%d" % (os.getpid() % 100000, next(_counter))
        lab = natlab.NatLab(self.bin, prefix, "eim", "eim", log_level="info")
        self.lab = lab
        self.addCleanup(self._down)
        lab.lab("up", "--nat-a", "eim", "--nat-b", "eim")
        if before_nodes:
            before_nodes()
        token = os.path.join(lab.tmp, "network.token")
        lab.token = "lab-token-%s" % prefix
        with open(token, "w") as f:
            f.write(lab.token + "\n")
        os.chmod(token, 0o600)
        lab.lab("spawn", "pub", "signal", self.bin, "signal", "--listen", natlab.SIGNAL_ADDR,
                "--key", os.path.join(lab.tmp, "signal.key"), "--admin", natlab.SIGNAL_ADMIN,
                "--token-file", token)
        lab.wait("the signaling server", lambda: lab.pid_alive("signal") and
                 lab.http("pub", natlab.SIGNAL_ADMIN, "/v1/status", timeout=3)[0] == 200, 15)
        self.nbytes, self.seed = nbytes, 23
        lab.lab("spawn", "hostA", "bulk", natlab.PY, PROBE, "serve", "--bind", BULK_ADDR,
                "--bytes", str(nbytes), "--rate", str(RATE), "--seed", str(self.seed),
                "--duration", "300")
        # No scheduled probe for a direct pair within a test: only a network change starts one.
        extra = '\n[session]\nupgrade_first = "10m"\n'
        lab.start_node("A", extra + """
[[export]]
name = "bulk"
target = "%s"
allow = ["*"]
""" % BULK_ADDR)
        lab.start_node("B", extra + """
[[listen]]
bind = "%s"
protocol = "tcp"
resource = "bulk"
""" % LISTEN_ADDR)
        for n in ("A", "B"):
            lab.wait_online(n)

        def listening():
            r = lab.in_ns("hostB", ["ss", "-Hltn", "src", LISTEN_ADDR], 10)
            return r.stdout.strip() != ""
        lab.wait("node B's listener", listening, 15)
        self.note("lab up in %.1fs" % (time.monotonic() - self.t0))

    def _down(self):
        self.lab.down()
        self.note("total %.1fs (lab up to down)" % (time.monotonic() - self.t0))

    def run_in(self, host, *argv):
        r = self.lab.in_ns(host, list(argv), 10)
        self.assertEqual(r.returncode, 0, "%s: %s" % (" ".join(argv), r.stderr))

    def nft(self, router, *script):
        """Runs nft commands in a router's namespace (our own table `netchange`)."""
        for line in script:
            self.run_in(router, "nft", line)

    def row(self, n):
        peer = self.lab.ids["B" if n == "A" else "A"]
        for r in self.lab.status("host" + n).get("sessions", {}).get("sessions", []) or []:
            if r.get("peer") == peer:
                return r
        return None

    def reasons(self, n):
        return [c.get("reason") for c in (self.row(n) or {}).get("pathHistory", []) or []]

    def pair(self, row):
        return "%s %s -> %s %s" % (row.get("localCandidateType"), row.get("localAddress"),
                                   row.get("remoteCandidateType"), row.get("remoteAddress"))

    @staticmethod
    def relayed(row):
        return "relay" in (row.get("localCandidateType"), row.get("remoteCandidateType"))

    def node_log(self, n):
        with open(self.lab.state_file("node%s.log" % n), errors="replace") as f:
            return f.read()

    # --- a client on hostB --------------------------------------------------------------
    def fetch(self, timeout):
        progress = os.path.join(self.lab.tmp, "progress-%d" % next(_counter))
        result = {}

        def run():
            r = self.lab.in_ns("hostB", [natlab.PY, PROBE, "fetch", "--to", LISTEN_ADDR,
                                         "--timeout", str(timeout), "--progress", progress],
                               timeout + 30)
            try:
                result["res"] = natlab.last_json(r.stdout)
            except Exception:  # reported by the test
                pass
            if result.get("res") is None:
                result["error"] = "fetch printed no result: %s %s" % (r.stdout, r.stderr)
        th = threading.Thread(target=run, daemon=True)
        th.start()
        return th, result, progress

    def fetched(self, progress):
        try:
            with open(progress) as f:
                return int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def wait_fetched(self, th, progress, nbytes, timeout=30):
        def cond():
            if not th.is_alive():
                self.fail("the fetch ended before %d bytes arrived" % nbytes)
            return self.fetched(progress) >= nbytes
        self.lab.wait("%d bytes at the client" % nbytes, cond, timeout, period=0.05)

    def finish(self, th, result, first_row):
        th.join(90)
        self.assertFalse(th.is_alive(), "the fetch did not end")
        self.assertNotIn("error", result, result)
        res = result["res"]
        self.note("fetch: %r" % res)
        self.assertEqual(res["end"], "eof", "the transfer did not end cleanly: %r" % res)
        self.assertEqual(res["bytes"], self.nbytes, res)
        self.assertEqual(res["sha256"], stallprobe.expected(self.nbytes, self.seed), res)
        after = self.row("B")
        self.assertIsNotNone(after, "B has no session to A after the change")
        self.assertEqual(after.get("sessionId"), first_row.get("sessionId"),
                         "the session was replaced")
        closed = self.lab.status("hostB").get("sessions", {}).get("recentlyClosed", []) or []
        self.assertEqual(closed, [], "B closed a session: %r" % closed)

    # --- 1 ---------------------------------------------------------------------------------
    def test_1_relayed_session_probes_when_an_address_is_added(self):
        try:
            self.start(nbytes=200 * MIB, before_nodes=lambda: self.nft(
                "natA", "add table ip netchange",
                "add chain ip netchange hole { type filter hook forward priority -10 ; }",
                "add rule ip netchange hole ip daddr %s meta l4proto udp drop" % NATB_WAN))
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

            self.lab.in_ns("natA", ["nft", "delete", "table", "ip", "netchange"], 10)
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
            self.assertGreaterEqual(num(a_row.get("networkChanges")), 1, a_row)
            # The signaling link left the dead address and logged in again.
            self.assertEqual(self.lab.status("hostA").get("signal", {}).get("state"), "online")
        except BaseException:
            sys.stderr.write(self.lab.logs(120) + "\n")
            raise


if __name__ == "__main__":
    unittest.main()
