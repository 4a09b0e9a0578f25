"""Which interfaces ICE gathers on (issue 12, item 4: `[ice] interfaces` / `[ice] exclude`), in
the NAT lab (deploy/lab/lab.sh through tests/lab/natlab.py): node A behind NAT A, node B behind
NAT B, both with `[debug] test_resources` (echo), node A logging at debug level (each gathered
candidate is a log line).

  1. Before node A starts, hostA gets a veth pair (veth-x0/veth-x1, 198.18.77.1-2/30, with
     their IPv6 link-local addresses) and an interface named like a VPN's tunnel (tun9, one end of another veth pair,
     198.18.78.1/32): with
     the default `exclude`, none of those addresses ever appears among node A's gathered
     candidates, eth0's address does, node A's start-up line lists them as skipped, and a
     session to B carries 8 MiB byte-exact.
  2. A veth pair is made (with addresses, up) and deleted in hostA while a 64 MiB echo runs
     over the session (NAT A limited to 100 Mbit/s, so it takes about 5 s): the transfer completes byte-exact on the same session, and no session
     closed on either node.
  3. With `[ice] interfaces = ["veth-x0"]` and `exclude = []` node A gathers on veth-x0's IPv4
     address (an excluded kind of interface chosen on purpose) and not on eth0.
  4. The same as 2 with a pair named like no excluded kind (lan-y0/lan-y1, 198.18.80.1/30):
     an interface ICE would gather on comes and goes; the session is unaffected the same way.

Needs root and the p2proxy binary ($P2PROXY_BIN, else the newest build*/p2proxy). Not root:
every test skips, except under CI=true, where they fail.

    cd tests/lab && CI=true P2PROXY_BIN=../../build/p2proxy python3 -m unittest -v test_interfaces
"""
import itertools
import os
import re
import subprocess
import sys
import threading
import time
import unittest

import natlab
from natlab import num

HOSTA_IP = "198.18.1.2"
MIB = 1 << 20
_counter = itertools.count()


class Interfaces(unittest.TestCase):
    def setUp(self):
        self.bin = natlab.require_lab(self, "lab interface tests")
        self.t0 = time.monotonic()

    def note(self, msg):
        sys.stderr.write("  [%s] %s\n" % (self._testMethodName, msg))
        sys.stderr.flush()

    def ip(self, host, *args):
        r = self.lab.in_ns(host, ["ip", *args], 10)
        self.assertEqual(r.returncode, 0, "ip %s: %s" % (" ".join(args), r.stderr))

    def start(self, ice_a=""):
        prefix = "ti%d-%d" % (os.getpid() % 100000, next(_counter))
        lab = natlab.NatLab(self.bin, prefix, "eim", "eim", log_level="debug")
        self.lab = lab
        self.addCleanup(self._down)
        lab.lab("up", "--nat-a", "eim", "--nat-b", "eim")
        # Virtual interfaces of the kinds excluded by default, before node A starts.
        self.ip("hostA", "link", "add", "veth-x0", "type", "veth", "peer", "name", "veth-x1")
        self.ip("hostA", "addr", "add", "198.18.77.1/30", "dev", "veth-x0")
        self.ip("hostA", "addr", "add", "198.18.77.2/30", "dev", "veth-x1")
        # (no dummy interfaces on every kernel: a veth pair named like a VPN's tunnel)
        self.ip("hostA", "link", "add", "tun9", "type", "veth", "peer", "name", "tun9p")
        self.ip("hostA", "addr", "add", "198.18.78.1/32", "dev", "tun9")
        for dev in ("veth-x0", "veth-x1", "tun9", "tun9p"):
            self.ip("hostA", "link", "set", dev, "up")
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
        extra = "\n[debug]\ntest_resources = true\n"
        if ice_a:
            self.start_node_a_with_ice(ice_a, extra)
        else:
            lab.start_node("A", extra)
        lab.start_node("B", extra)
        for n in ("A", "B"):
            lab.wait_online(n)
        self.note("lab up in %.1fs" % (time.monotonic() - self.t0))

    def start_node_a_with_ice(self, ice_lines, extra):
        """Node A as natlab's start_node makes it, with more keys under [ice] (a TOML file has
        one [ice] table) and without TURN."""
        lab = self.lab
        key = os.path.join(lab.tmp, "a.key")
        r = subprocess.run([self.bin, "keygen", "--out", key], capture_output=True, text=True,
                           timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        lab.ids["A"] = r.stdout.strip().splitlines()[-1].strip()
        cfg = os.path.join(lab.tmp, "nodeA.toml")
        with open(cfg, "w") as f:
            f.write("""[node]
key = "%s"

[signal]
server = "%s"
token = "%s"

[ice]
stun = ["%s"]
%s

[admin]
listen = "%s"

[log]
level = "debug"
%s""" % (key, natlab.SIGNAL_ADDR, lab.token, natlab.TURN, ice_lines, natlab.NODE_ADMIN,
         extra))
        lab.lab("spawn", "hostA", "nodeA", self.bin, "node", "--config", cfg)

    def _down(self):
        self.lab.down()
        self.note("total %.1fs (lab up to down)" % (time.monotonic() - self.t0))

    def pump(self, nbytes, streams=None):
        path = "/v1/debug/pump/%s?resource=echo&bytes=%d" % (self.lab.ids["A"], nbytes)
        if streams:
            path += "&streams=%d" % streams
        code, body = self.lab.http("hostB", natlab.NODE_ADMIN, path, timeout=120)
        self.assertEqual(code, 200, "pump: %s %r" % (code, body))
        self.assertFalse(body.get("error"), body)
        self.assertEqual(num(body.get("received")), nbytes * (streams or 1), body)
        self.assertEqual(body.get("receivedSha256"), body.get("sentSha256"), body)
        return body

    def log_a(self):
        with open(self.lab.state_file("nodeA.log"), errors="replace") as f:
            return f.read()

    def gathered(self):
        return re.findall(r"gathers (candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ (\w+))",
                          self.log_a())

    # --- 1 ---------------------------------------------------------------------------------
    def test_1_excluded_interfaces_never_become_candidates(self):
        self.start()
        try:
            body = self.pump(8 * MIB)
            self.note("session: %s" % (body.get("session") or {}).get("localAddress"))
            cands = self.gathered()
            self.assertTrue(cands, "node A logged no gathered candidate")
            hosts = sorted({addr for _, addr, typ in cands if typ == "host"})
            self.note("node A's host candidates: %s" % hosts)
            self.assertIn(HOSTA_IP, hosts, "eth0's address was not gathered")
            for _, addr, _ in cands:
                self.assertFalse(addr.startswith("198.18.77.") or addr.startswith("198.18.78."),
                                 "an excluded interface's address was gathered: %s" % addr)
                self.assertFalse(addr.lower().startswith("fe80"),
                                 "a link-local address was gathered: %s" % addr)
            start = [l for l in self.log_a().splitlines() if "gathers on interfaces:" in l]
            self.assertTrue(start, "no start-up line about interfaces")
            self.note(start[0])
            self.assertIn("veth-x0 198.18.77.1 (excluded by veth*)", start[0])
            self.assertIn("tun9 198.18.78.1 (excluded by tun*)", start[0])
            self.assertIn("eth0 %s" % HOSTA_IP, start[0].split("; skips")[0])
        except BaseException:
            sys.stderr.write(self.lab.logs(60) + "\n")
            raise

    # --- 2 ---------------------------------------------------------------------------------
    def test_2_a_veth_pair_made_and_deleted_during_a_session(self):
        self.check_interface_comes_and_goes("veth-y0", "veth-y1", "198.18.79.1/30")

    def check_interface_comes_and_goes(self, dev, peer, addr):
        self.start()
        try:
            first = self.pump(MIB)
            sid = (first.get("session") or {}).get("sessionId")
            # 100 Mbit/s through NAT A: the 64 MiB echo takes about 5 s.
            self.lab.lab("impair", "natA", "--rate", "100")
            result = {}

            def run():
                try:
                    result["body"] = self.pump(64 * MIB)
                except BaseException as e:  # reported below
                    result["exc"] = e
            th = threading.Thread(target=run, daemon=True)
            th.start()
            time.sleep(0.5)
            self.ip("hostA", "link", "add", dev, "type", "veth", "peer", "name", peer)
            self.ip("hostA", "addr", "add", addr, "dev", dev)
            self.ip("hostA", "link", "set", dev, "up")
            self.ip("hostA", "link", "set", peer, "up")
            time.sleep(1.0)
            self.ip("hostA", "link", "del", dev)
            running = th.is_alive()
            th.join(150)
            self.assertFalse(th.is_alive(), "the pump did not end")
            if "exc" in result:
                raise result["exc"]
            self.note("the pump was %s when the veth pair was deleted" %
                      ("still running" if running else "already done"))
            self.assertTrue(running, "the transfer ended before the veth pair was deleted")
            self.assertEqual((result["body"].get("session") or {}).get("sessionId"), sid,
                             "the session was replaced")
            for n in ("A", "B"):
                closed = self.lab.status("host" + n).get("sessions", {}).get(
                    "recentlyClosed", []) or []
                self.assertEqual(closed, [], "node %s closed a session: %r" % (n, closed))
        except BaseException:
            sys.stderr.write(self.lab.logs(60) + "\n")
            raise

    # --- 3 ---------------------------------------------------------------------------------
    def test_3_interfaces_chooses_even_an_excluded_kind(self):
        self.start(ice_a='interfaces = ["veth-x0"]\nexclude = []')
        try:
            deadline = time.monotonic() + 10
            while "gathers on interfaces:" not in self.log_a() and time.monotonic() < deadline:
                time.sleep(0.2)
            line = [l for l in self.log_a().splitlines() if "gathers on interfaces:" in l]
            self.assertTrue(line, "no start-up line about interfaces")
            self.note(line[0])
            used = line[0].split("gathers on interfaces:")[1].split("; skips")[0]
            self.assertIn("veth-x0 198.18.77.1", used)
            self.assertNotIn("eth0 ", used)
            self.assertIn("eth0 %s (not in interfaces)" % HOSTA_IP, line[0])
        except BaseException:
            sys.stderr.write(self.lab.logs(60) + "\n")
            raise

    # --- 4 ---------------------------------------------------------------------------------
    def test_4_a_gatherable_interface_made_and_deleted_during_a_session(self):
        # Named like no excluded kind: an interface ICE would gather on (a LAN port, a USB
        # tether), so a node that watches interfaces sees it come and go.
        self.check_interface_comes_and_goes("lan-y0", "lan-y1", "198.18.80.1/30")


if __name__ == "__main__":
    unittest.main(verbosity=2)
