"""The lab the path tests share (tests/lab/test_paths.py, tests/lab/test_netchange.py): a signaling
server and coturn in pub, node A behind NAT A exporting `bulk` (tests/lab/stallprobe.py serving
pseudo-random bytes at a fixed rate), node B behind NAT B with a `tcp` listener for it; a real
TCP client on hostB fetches through B's listener and checks the SHA-256 of what arrives. Both
NATs are endpoint-independent (a direct pair works unless a test drops it).

A test class derives from BulkPair and sets PREFIX (its labs' name), RATE, SEED, NODE_EXTRA
(configuration both nodes get) and TABLE (its own nft table in the routers)."""
import itertools
import os
import sys
import threading
import time
import unittest

import natlab
import stallprobe

PROBE = os.path.join(natlab.HERE, "stallprobe.py")
BULK_ADDR = "127.0.0.1:9002"    # stallprobe serve on hostA, exported as `bulk`
LISTEN_ADDR = "127.0.0.1:9000"  # node B's listener for `bulk`
NATB_WAN = "198.18.0.3"
MIB = 1 << 20
_counter = itertools.count()


class BulkPair(unittest.TestCase):
    PREFIX = "bp"
    RATE = 8 * MIB
    SEED = 11
    NODE_EXTRA = ""
    TABLE = "bulkpair"

    def note(self, msg):
        sys.stderr.write("  [%s] %s\n" % (self._testMethodName, msg))
        sys.stderr.flush()

    # --- the lab ------------------------------------------------------------------------
    def start(self, nbytes, before_nodes=None):
        """Brings the lab up (before_nodes runs once the routers exist, before any node starts)
        with `nbytes` to serve per connection."""
        prefix = "%s%d-%d" % (self.PREFIX, os.getpid() % 100000, next(_counter))
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
        self.nbytes, self.seed = nbytes, self.SEED
        lab.lab("spawn", "hostA", "bulk", natlab.PY, PROBE, "serve", "--bind", BULK_ADDR,
                "--bytes", str(nbytes), "--rate", str(self.RATE), "--seed", str(self.seed),
                "--duration", "600")
        lab.start_node("A", self.NODE_EXTRA + """
[[export]]
name = "bulk"
target = "%s"
allow = ["*"]
""" % BULK_ADDR)
        lab.start_node("B", self.NODE_EXTRA + """
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
        """Runs nft commands in a router's namespace."""
        for line in script:
            self.run_in(router, "nft", line)

    def add_drop(self, router, rule):
        """A drop rule in our own table (TABLE), before the router's forwarding."""
        self.nft(router, "add table ip %s" % self.TABLE,
                 "add chain ip %s hole { type filter hook forward priority -10 ; }" % self.TABLE,
                 "add rule ip %s hole %s" % (self.TABLE, rule))

    def clear_drops(self, router):
        self.lab.in_ns(router, ["nft", "delete", "table", "ip", self.TABLE], 10)

    # --- the nodes' view ----------------------------------------------------------------
    def row(self, n):
        """Node n's session row for the other node (/v1/status), or None."""
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

    def assert_migrated(self, n):
        """QUIC moved to the new ICE generation's pair on node n: its status names the
        generation QUIC sends on, counts the move, and marks the newest pathHistory entry."""
        row = self.row(n) or {}
        history = row.get("pathHistory", []) or []
        self.assertGreater(int(row.get("quicPath", 0)), 0, "%s: %r" % (n, row))
        self.assertGreater(int(row.get("migrations", 0)), 0, "%s: %r" % (n, row))
        self.assertTrue(history and history[-1].get("migrated"), "%s: %r" % (n, history))

    # --- a client on hostB --------------------------------------------------------------
    def fetch(self, timeout):
        """Starts a fetch through B's listener; returns (thread, result, progress file)."""
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
        """The fetch ended byte-exact, on the session it began on, and B closed none."""
        th.join(120)
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
        return after
