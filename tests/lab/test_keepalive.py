"""A tunnel idle for longer than the NATs' UDP mapping timeout (issue 12: "NAT mapping timeout
20 s and a tunnel idle for 120 s: no reconnect"), in the NAT lab (deploy/lab/lab.sh through
tests/lab/natlab.py): node A behind NAT A exports `banner` (one line on accept, then it counts
what the client sends), node B behind NAT B listens for it; both NATs are eim and forget a UDP
mapping after 20 s without packets (nf_conntrack_udp_timeout and _stream set to 20 in each
router's namespace: lab.sh impair --udp-timeout 20). The nodes run at their defaults
(session.keepalive 10 s, idle_timeout 30 s, idle_linger 30 s).

A client on hostB opens a connection through B's listener, reads the banner and then holds the
connection open without a byte for 120 s; meanwhile both routers' conntrack tables are read
every 5 s. Then the client sends 1 MiB on that same connection, and a second client opens a
new connection. Asserted:

  - the routers really forget after 20 s (no UDP entry's remaining time above 20 s), and the
    session's mapping on each router (the pair's addresses in B's status) is there in every
    sample: something kept it alive;
  - the held connection carries its 1 MiB after the idle (the export counts it), within 10 s;
    the new connection gets its banner;
  - no reconnect: on both nodes the same session id as before the idle, one session, nothing
    in recentlyClosed, and the session's pathHistory unchanged (no rebinding, no switch).

Runs in about 2.5 minutes. Needs root and the p2proxy binary ($P2PROXY_BIN, else the newest
build*/p2proxy). Not root: the test skips, except under CI=true, where it fails.

    cd tests/lab && CI=true P2PROXY_BIN=../../build/p2proxy python3 -m unittest -v test_keepalive
"""
import os
import sys
import threading
import time
import unittest

import natlab

IDLE = 120            # seconds the tunnel stays silent
UDP_TIMEOUT = 20      # the routers' conntrack UDP timeouts, seconds
SAMPLE_EVERY = 5.0    # seconds between conntrack samples
MIB = 1 << 20


def addr_of(s):
    """("ip", port) of "ip:port"."""
    host, _, port = (s or "").rpartition(":")
    return host, int(port) if port.isdigit() else 0


def udp_entries(lab, router):
    """The UDP conntrack entries of ROUTER's namespace: a list of (remaining seconds, the reply
    direction's destination (ip, port): the router's public end of the mapping)."""
    r = lab.in_ns(router, ["cat", "/proc/net/nf_conntrack"], 10)
    out = []
    for line in r.stdout.splitlines():
        f = line.split()
        # ipv4 2 udp 17 REMAINING src= dst= sport= dport= [UNREPLIED] src= dst= sport= dport= ...
        if len(f) > 5 and f[2] == "udp" and f[4].isdigit():
            kv = [t.split("=", 1) for t in f[5:] if "=" in t]
            dst = [v for k, v in kv if k == "dst"]
            dport = [v for k, v in kv if k == "dport"]
            if len(dst) >= 2 and len(dport) >= 2 and dport[1].isdigit():
                out.append((int(f[4]), (dst[1], int(dport[1]))))
    return out


class Keepalive(unittest.TestCase):
    def setUp(self):
        self.bin = natlab.require_lab(self, "lab keepalive tests")
        self.t0 = time.monotonic()

    def note(self, msg):
        sys.stderr.write("  [%s] %s\n" % (self._testMethodName, msg))
        sys.stderr.flush()

    def _down(self):
        self.lab.down()
        self.note("total %.1fs (lab up to down)" % (time.monotonic() - self.t0))

    def session(self, n):
        """Node N's only session row (to the other node), and all of its session status."""
        st = self.lab.status("host" + n).get("sessions", {})
        rows = st.get("sessions", []) or []
        self.assertEqual(len(rows), 1, "node %s sessions: %r" % (n, rows))
        return rows[0], st

    def test_idle_120s_behind_20s_mappings_keeps_the_session(self):
        prefix = "tk%d" % (os.getpid() % 100000)
        self.lab = lab = natlab.NatLab(self.bin, prefix, "eim", "eim", log_level="info")
        self.addCleanup(self._down)
        try:
            lab.up()
            for r in ("natA", "natB"):
                lab.lab("impair", r, "--udp-timeout", str(UDP_TIMEOUT))
                got = lab.in_ns(r, ["sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout",
                                    "net.netfilter.nf_conntrack_udp_timeout_stream"], 10)
                self.assertEqual(got.stdout.split(), [str(UDP_TIMEOUT)] * 2, got.stderr)
            self.note("lab up in %.1fs, UDP mappings expire after %d s" %
                      (time.monotonic() - self.t0, UDP_TIMEOUT))

            # The client that holds its connection silent, then sends 1 MiB on it.
            held = {}

            def hold():
                r = lab.in_ns("hostB", [natlab.PY, natlab.SELF, "open", "--to",
                                        natlab.LISTEN_ADDR, "--expect", lab.banner_line,
                                        "--timeout", "30", "--idle", str(IDLE),
                                        "--send", str(MIB)], IDLE + 90)
                held["res"] = natlab.last_json(r.stdout) or {"error": r.stderr}
            th = threading.Thread(target=hold, daemon=True)
            th.start()
            t_idle = time.monotonic()

            def up():
                for n in ("A", "B"):
                    r = lab.session_row("host" + n, lab.ids["B" if n == "A" else "A"])
                    if not r or r.get("state") not in natlab.UP_STATES:
                        return False
                return True
            lab.wait("both nodes' session to be up", up, natlab.OPEN_TIMEOUT)
            before = {n: self.session(n)[0] for n in ("A", "B")}
            self.note("session %s, pair %s %s -> %s %s" % (
                before["B"].get("sessionId"), before["B"].get("localCandidateType"),
                before["B"].get("localAddress"), before["B"].get("remoteCandidateType"),
                before["B"].get("remoteAddress")))
            self.assertTrue(before["B"].get("pathHistory"), before["B"])
            # The pair's public ends: B's remote is A's mapping on NAT A, B's local (a srflx
            # candidate behind eim) B's mapping on NAT B.
            mapped = {"natA": addr_of(before["B"].get("remoteAddress")),
                      "natB": addr_of(before["B"].get("localAddress"))}
            wan = {"natA": "198.18.0.2", "natB": "198.18.0.3"}

            # The idle: sample the routers' conntrack tables.
            samples, longest = [], 0
            while th.is_alive() and time.monotonic() - t_idle < IDLE - SAMPLE_EVERY:
                seen = {}
                for r in ("natA", "natB"):
                    entries = udp_entries(lab, r)
                    longest = max([longest] + [t for t, _ in entries])
                    ip, port = mapped[r]
                    if ip != wan[r]:
                        continue  # not a mapping of this router (a host or relay candidate)
                    seen[r] = any(end == (ip, port) for _, end in entries)
                samples.append(seen)
                time.sleep(SAMPLE_EVERY)
            th.join(IDLE + 100)
            self.assertFalse(th.is_alive(), "the held client did not end")
            res = held["res"]
            self.note("held connection: %r" % res)
            self.note("%d conntrack samples; longest UDP timeout seen %d s; the session's "
                      "mapping seen in %s" % (len(samples), longest, {
                          r: sum(1 for s in samples if s.get(r)) for r in ("natA", "natB")}))
            self.assertLessEqual(longest, UDP_TIMEOUT, "a router keeps UDP mappings longer")
            checked = [r for r in ("natA", "natB") if mapped[r][0] == wan[r]]
            self.assertTrue(checked, "the pair uses no NAT mapping: %r" % mapped)
            self.assertGreaterEqual(len(samples), (IDLE - 2 * SAMPLE_EVERY) // SAMPLE_EVERY - 2)
            for r in checked:
                self.assertTrue(all(s.get(r) for s in samples),
                                "%s lost the session's mapping %r during the idle" %
                                (r, mapped[r]))

            self.assertTrue(res.get("connected"), res)
            self.assertEqual(res.get("sent"), MIB, "1 MiB after the idle: %r" % res)
            self.assertLess(res.get("send_s"), 10.0, res)
            fresh = lab.open_once()
            self.assertTrue(fresh.get("connected"), "a new connection after the idle: %r" % fresh)

            for n in ("A", "B"):
                after, st = self.session(n)
                self.assertEqual(after.get("sessionId"), before[n].get("sessionId"),
                                 "node %s reconnected: %r -> %r" % (n, before[n], after))
                self.assertEqual(after.get("pathHistory"), before[n].get("pathHistory"),
                                 "node %s's path changed" % n)
                self.assertEqual(st.get("recentlyClosed", []) or [], [],
                                 "node %s closed a session" % n)
        except BaseException:
            sys.stderr.write(lab.logs(80) + "\n")
            raise


if __name__ == "__main__":
    unittest.main(verbosity=2)
