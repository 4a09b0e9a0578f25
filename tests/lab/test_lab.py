"""Tests of the network lab itself (deploy/lab/lab.sh): the NATs behave as documented, coturn
answers, impairments act, and `down` leaves nothing behind. Python standard library only.

Needs root (network namespaces). Not root: every test skips, except under CI=true, where they fail.
Each test brings up its own lab under its own prefix and tears it down, whatever happens.

    cd tests/lab && CI=true python3 -m unittest -v test_lab
"""
import itertools
import json
import os
import select
import shutil
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LAB = os.path.join(REPO, "deploy", "lab", "lab.sh")
PROBE = os.path.join(HERE, "netprobe.py")
PY = sys.executable or "python3"

PUB_IP, PUB_IP2 = "198.18.0.1", "198.18.0.10"
NATA_WAN = "198.18.0.2"
RUN_ROOT = "/run/p2proxy-lab"

IS_ROOT = os.geteuid() == 0
IN_CI = os.environ.get("CI", "").lower() == "true"
NOT_ROOT_MSG = "lab tests need root (network namespaces); run as root or under CI=true"
TOOLS = ("ip", "nft", "tc", "iptables", "turnserver")

_counter = itertools.count()


def last_json(text):
    for line in reversed((text or "").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError("no JSON in output: %r" % text)


class LabCase(unittest.TestCase):
    def setUp(self):
        if not IS_ROOT:
            if IN_CI:
                self.fail(NOT_ROOT_MSG + " (CI=true: not root is a failure, not a skip)")
            self.skipTest(NOT_ROOT_MSG)
        missing = [t for t in TOOLS if shutil.which(t) is None]
        if missing:
            msg = "lab tools missing: %s (run deploy/install-deps.sh)" % " ".join(missing)
            if IN_CI:
                self.fail(msg)
            self.skipTest(msg)
        self.prefix = "lt%d-%d" % (os.getpid() % 100000, next(_counter))
        self.procs = []
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.lab("down", check=False)

    # --- helpers -------------------------------------------------------------------------
    def lab(self, *args, check=True, timeout=90):
        r = subprocess.run([LAB, "--prefix", self.prefix, *args], capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            self.fail("lab.sh %s failed (%d): %s%s" % (" ".join(args), r.returncode, r.stdout,
                                                        r.stderr))
        return r

    def up(self, *args):
        self.lab("up", *args)

    def ns(self, host):
        return "%s-%s" % (self.prefix, host)

    def probe(self, host, *args, timeout=30):
        """Runs netprobe.py in HOST's namespace to completion; returns its JSON result."""
        r = subprocess.run(["ip", "netns", "exec", self.ns(host), PY, PROBE, *args],
                           capture_output=True, text=True, timeout=timeout)
        self.assertEqual(r.returncode, 0, "netprobe %s failed: %s" % (args, r.stderr))
        return last_json(r.stdout)

    def probe_bg(self, host, *args, ready_timeout=10):
        """Starts netprobe.py in HOST's namespace and waits for its {"ready": true} line."""
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(host), PY, PROBE, *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        r, _, _ = select.select([p.stdout], [], [], ready_timeout)
        if not r:
            self.fail("netprobe %s not ready within %ss" % (args, ready_timeout))
        line = p.stdout.readline()
        self.assertIn('"ready"', line, "netprobe %s: %s %s" % (args, line, p.stderr.read()
                                                               if p.poll() is not None else ""))
        return p

    def finish(self, p, timeout=10):
        """SIGTERMs a background netprobe and returns its final JSON."""
        if p.poll() is None:
            p.terminate()
        out, err = p.communicate(timeout=timeout)
        return last_json(out)

    def serve_pub(self, *extra, duration=60):
        args = ["serve", "--udp", "%s:4000" % PUB_IP, "--udp", "%s:4001" % PUB_IP2,
                "--tcp", "%s:4000" % PUB_IP, "--duration", str(duration), *extra]
        return self.probe_bg("pub", *args)

    # --- (a) (b): mapping behaviour -----------------------------------------------------
    def map_two_destinations(self):
        self.serve_pub()
        res = self.probe("hostA", "udp-map", "--bind", "5555",
                         "--to", "%s:4000" % PUB_IP, "--to", "%s:4001" % PUB_IP2)
        seen = res["seen"]
        self.assertEqual(len(seen), 2, "both destinations must answer: %r" % res)
        m1, m2 = seen["%s:4000" % PUB_IP], seen["%s:4001" % PUB_IP2]
        return m1.split(":"), m2.split(":")

    def test_a_eim_mapping_is_endpoint_independent(self):
        self.up("--nat-a", "eim", "--nat-b", "eim")
        (ip1, port1), (ip2, port2) = self.map_two_destinations()
        self.assertEqual(ip1, NATA_WAN)
        self.assertEqual(ip2, NATA_WAN)
        self.assertEqual(port1, port2, "eim: same mapped port towards both destinations")

    def test_b_sym_mapping_depends_on_destination(self):
        self.up("--nat-a", "sym", "--nat-b", "sym")
        (ip1, port1), (ip2, port2) = self.map_two_destinations()
        self.assertEqual(ip1, NATA_WAN)
        self.assertEqual(ip2, NATA_WAN)
        self.assertNotEqual(port1, port2, "sym: a new mapped port per destination")

    # --- (c): unsolicited inbound --------------------------------------------------------
    def unsolicited_then_outbound(self, *up_args):
        self.up("--nat-a", "eim", *up_args)
        listener = self.probe_bg("hostA", "listen", "--bind", "5555", "--timeout", "2.5")
        prober = self.probe_bg("pub", "probe", "--bind", "%s:4002" % PUB_IP,
                               "--to", "%s:5555" % NATA_WAN, "--count", "3", "--echo-for", "20")
        heard = self.finish_wait(listener)
        # now hostA talks first, from the same port, to the prober's address
        res = self.probe("hostA", "udp-map", "--bind", "5555", "--to", "%s:4002" % PUB_IP)
        self.finish(prober)
        mapped = res["seen"].get("%s:4002" % PUB_IP)
        self.assertIsNotNone(mapped, "hostA's outbound packet must be answered: %r" % res)
        return heard, mapped

    def finish_wait(self, p, timeout=15):
        out, _ = p.communicate(timeout=timeout)
        return last_json(out)

    def test_c_unsolicited_inbound_does_not_reach_host(self):
        heard, mapped = self.unsolicited_then_outbound()
        self.assertEqual(heard["received"], 0, "unsolicited packets reached hostA: %r" % heard)
        # the dropped probes left no conntrack entry: hostA keeps its port (ARCHITECTURE §8)
        self.assertEqual(mapped, "%s:5555" % NATA_WAN)

    def test_c2_inbound_accept_early_probe_moves_mapping(self):
        # Linux's default (no WAN input filter): the early probe creates a conntrack entry, so
        # hostA's later outbound packet from the same port gets another mapped port.
        heard, mapped = self.unsolicited_then_outbound("--inbound", "accept")
        self.assertEqual(heard["received"], 0)
        ip, port = mapped.split(":")
        self.assertEqual(ip, NATA_WAN)
        self.assertNotEqual(port, "5555", "expected the §8 port clash to move the mapping")

    # --- (d): coturn ---------------------------------------------------------------------
    def test_d_stun_binding_through_nat_to_coturn(self):
        self.up("--nat-a", "eim")
        res = self.probe("hostA", "stun", "--to", "%s:3478" % PUB_IP, "--bind", "6000")
        self.assertTrue(res["answered"], "coturn did not answer the Binding request")
        self.assertEqual(res["type"], 0x0101, "expected a Binding success response")
        self.assertTrue(res["cookie_ok"])
        ip, port = res["xor_mapped"].split(":")
        self.assertEqual(ip, NATA_WAN)
        self.assertEqual(port, "6000")

    # --- (e): udp-blocked -------------------------------------------------------------------
    def test_e_udp_blocked_allows_only_tcp(self):
        self.up("--nat-a", "udp-blocked")
        self.serve_pub()
        res = self.probe("hostA", "udp-map", "--to", "%s:4000" % PUB_IP, "--timeout", "2")
        self.assertEqual(res["seen"], {}, "UDP got through a udp-blocked NAT: %r" % res)
        tcp = self.probe("hostA", "tcp", "--to", "%s:4000" % PUB_IP)
        self.assertTrue(tcp["ok"], "TCP must work through udp-blocked: %r" % tcp)
        # hostB (eim) still has UDP: the block is natA's, not the lab's
        res = self.probe("hostB", "udp-map", "--to", "%s:4000" % PUB_IP)
        self.assertEqual(len(res["seen"]), 1)

    # --- (f): loss ----------------------------------------------------------------------
    def test_f_loss_10_percent(self):
        self.up("--nat-a", "eim")
        serve = self.serve_pub()
        self.lab("impair", "natA", "--loss", "10")
        n = 2000
        self.probe("hostA", "sink-send", "--to", "%s:4000" % PUB_IP, "--count", str(n))
        time.sleep(0.5)
        got = self.finish(serve)["sink"]
        loss = 1.0 - got / n
        self.assertGreaterEqual(loss, 0.05, "received %d of %d" % (got, n))
        self.assertLessEqual(loss, 0.15, "received %d of %d" % (got, n))

    # --- (g): delay ---------------------------------------------------------------------
    def test_g_delay_50ms(self):
        if subprocess.run([LAB, "delayer-path"], capture_output=True,
                          timeout=10).returncode != 0:
            self.skipTest("nfq_delayer not built (needs libnetfilter-queue-dev; cmake target "
                          "nfq_delayer, or deploy/lab/lab.sh build-delayer)")
        self.up("--nat-a", "eim")
        self.serve_pub()
        before = self.probe("hostA", "rtt", "--to", "%s:4000" % PUB_IP, "--count", "20")
        self.assertEqual(before["answered"], 20, before)
        self.lab("impair", "natA", "--delay", "50")
        after = self.probe("hostA", "rtt", "--to", "%s:4000" % PUB_IP, "--count", "20")
        self.assertEqual(after["answered"], 20, after)
        # each direction is delayed by 50 ms; assert only the documented lower bound
        self.assertGreaterEqual(after["median_ms"] - before["median_ms"], 40.0,
                                "before %r after %r" % (before, after))
        # and removing the delay brings the RTT back down
        self.lab("impair", "natA", "--delay", "0")
        again = self.probe("hostA", "rtt", "--to", "%s:4000" % PUB_IP, "--count", "10")
        self.assertLess(again["median_ms"], 40.0, again)

    # --- (h): cleanup -------------------------------------------------------------------
    def our_namespaces(self):
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                             timeout=10).stdout
        return [l.split()[0] for l in out.splitlines()
                if l.split() and l.split()[0].startswith(self.prefix + "-")]

    def test_h_down_leaves_nothing(self):
        self.up("--nat-a", "sym", "--nat-b", "udp-blocked")
        self.lab("impair", "natB", "--loss", "1", "--rate", "50")
        if subprocess.run([LAB, "delayer-path"], capture_output=True,
                          timeout=10).returncode == 0:
            self.lab("impair", "natA", "--delay", "5")
        self.lab("spawn", "pub", "sleeper", "sleep", "300")
        # an untracked process too, started the way tests start helpers
        stray = subprocess.Popen(["ip", "netns", "exec", self.ns("hostB"), "sleep", "300"])
        self.procs.append(stray)
        state = os.path.join(RUN_ROOT, self.prefix)
        pids = []
        for f in os.listdir(state):
            if f.endswith(".pid"):
                with open(os.path.join(state, f)) as fh:
                    pids.append(int(fh.read().strip()))
        self.assertGreaterEqual(len(pids), 2, "expected coturn and the sleeper: %r" % pids)
        pids.append(stray.pid)
        self.assertEqual(len(self.our_namespaces()), 5)

        self.lab("down")
        stray.wait(timeout=10)
        self.assertEqual(self.our_namespaces(), [])
        self.assertFalse(os.path.exists(state), "state dir left behind")
        deadline = time.monotonic() + 5
        alive = pids
        while alive and time.monotonic() < deadline:
            alive = [p for p in pids if self.alive(p)]
            time.sleep(0.1)
        self.assertEqual(alive, [], "processes left running")
        # no nft table was ever made in the default namespace; nothing of ours there
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                                timeout=10).stdout
        self.assertNotIn(self.prefix, tables)
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                               timeout=10).stdout
        self.assertNotIn(self.prefix, links)
        # down again is harmless, and down also cleans a partial up (namespaces by name)
        self.lab("down")
        for h in ("pub", "natA"):
            subprocess.run(["ip", "netns", "add", self.ns(h)], check=True, timeout=10)
        self.lab("down")
        self.assertEqual(self.our_namespaces(), [])

    @staticmethod
    def alive(pid):
        try:
            with open("/proc/%d/status" % pid) as f:
                return not any(l.startswith("State:") and "Z" in l.split()[1] for l in f)
        except FileNotFoundError:
            return False


if __name__ == "__main__":
    unittest.main(verbosity=2)
