"""Peer sessions through the network lab (deploy/lab/lab.sh): real p2proxy processes — a
signaling server in pub, one node behind each NAT — carry bytes over ICE + QUIC, and the tests
check what arrives and which path it took. Python standard library only.

Each node runs with `[debug] test_resources = true`, so it serves `echo` on streams its peers
open, and its admin port (127.0.0.1:7070 inside its own namespace) answers
`GET /v1/debug/pump/NODE-ID?resource=echo&bytes=N[&streams=K]`: the node opens (or reuses) the
session to NODE-ID, sends N pseudo-random bytes to the peer's echo and reads them back.

Needs root (network namespaces) and the p2proxy binary ($P2PROXY_BIN, else the newest
build*/p2proxy of the repository). Not root: every test skips, except under CI=true, where they
fail. Each test brings up its own lab under its own prefix and tears it down, whatever happens;
on failure the signaling server's, the nodes' and coturn's logs are printed.

    cd tests/lab && P2PROXY_BIN=../../build/p2proxy python3 -m unittest -v test_sessions
"""
import functools
import glob
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LAB = os.path.join(REPO, "deploy", "lab", "lab.sh")
HTTP = os.path.join(HERE, "labhttp.py")
PY = sys.executable or "python3"
RUN_ROOT = "/run/p2proxy-lab"

PUB_IP, PUB_IP2 = "198.18.0.1", "198.18.0.10"
SIGNAL_ADDR = "%s:7000" % PUB_IP2
SIGNAL_ADMIN = "127.0.0.1:7071"  # inside the pub namespace: loopback needs no admin token
TURN = "%s:3478" % PUB_IP
TURN_USER, TURN_PASS = "lab", "lab-secret"
NODE_ADMIN = "127.0.0.1:7070"   # loopback of each host's own namespace
RELAY_PORTS = range(49152, 49200)

MIB = 1 << 20
PUMP_HTTP_TIMEOUT = 300.0       # seconds, for one pump request
ONLINE_TIMEOUT = 30.0           # seconds for a node to log in
DIRECT_TYPES = {"host", "srflx", "prflx"}
UP_STATES = {"ready", "lingering"}   # after a pump the last stream has ended: lingering
OFFLINE_ID = "a" * 52

IS_ROOT = os.geteuid() == 0
IN_CI = os.environ.get("CI", "").lower() == "true"
NOT_ROOT_MSG = "lab session tests need root (network namespaces): run them as root"
TOOLS = ("ip", "nft", "tc", "iptables", "turnserver")

_counter = itertools.count()


def find_binary():
    b = os.environ.get("P2PROXY_BIN", "")
    if b:
        return b if os.access(b, os.X_OK) else None
    found = [p for p in glob.glob(os.path.join(REPO, "build*", "p2proxy")) if os.access(p, os.X_OK)]
    return max(found, key=os.path.getmtime) if found else None


def last_json(text):
    for line in reversed((text or "").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError("no JSON in output: %r" % text)


def num(v, default=0):
    """A counter from the status JSON: 64-bit ones are strings (protobuf JSON mapping)."""
    if v is None or v == "":
        return default
    return int(float(v)) if isinstance(v, (str, float)) else int(v)


def dump_logs_on_failure(fn):
    @functools.wraps(fn)
    def wrapper(self, *a, **kw):
        try:
            return fn(self, *a, **kw)
        except unittest.SkipTest:
            raise
        except BaseException:
            self.dump_logs()
            raise
    return wrapper


class SessionCase(unittest.TestCase):
    def setUp(self):
        def unavailable(msg):
            if IN_CI:
                self.fail(msg + " (CI=true: this is a failure, not a skip)")
            self.skipTest(msg)
        if not IS_ROOT:
            unavailable(NOT_ROOT_MSG)
        missing = [t for t in TOOLS if shutil.which(t) is None]
        if missing:
            unavailable("lab tools missing: %s (run deploy/install-deps.sh)" % " ".join(missing))
        self.bin = find_binary()
        if not self.bin:
            unavailable("p2proxy binary not found: set P2PROXY_BIN (ctest does) or build it")
        self.prefix = "ts%d-%d" % (os.getpid() % 100000, next(_counter))
        self.tmp = tempfile.mkdtemp(prefix="p2proxy-%s-" % self.prefix)
        os.chmod(self.tmp, 0o700)
        self.ids = {}
        self.t0 = time.monotonic()
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        self.lab("down", check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.note("total %.1fs (lab up to down)" % (time.monotonic() - self.t0))

    # --- helpers -------------------------------------------------------------------------
    def note(self, msg):
        sys.stderr.write("  [%s] %s\n" % (self._testMethodName, msg))
        sys.stderr.flush()

    def lab(self, *args, check=True, timeout=90):
        r = subprocess.run([LAB, "--prefix", self.prefix, *args], capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            self.fail("lab.sh %s failed (%d): %s%s" % (" ".join(args), r.returncode, r.stdout,
                                                        r.stderr))
        return r

    def ns(self, host):
        return "%s-%s" % (self.prefix, host)

    def state_file(self, name):
        return os.path.join(RUN_ROOT, self.prefix, name)

    def http(self, host, addr, path, timeout=10.0):
        """GET http://ADDR/PATH inside HOST's namespace: (status, body, seconds); status 0 means
        no HTTP answer (refused, timed out)."""
        r = subprocess.run(["ip", "netns", "exec", self.ns(host), PY, HTTP,
                            "http://%s%s" % (addr, path), "--timeout", str(timeout)],
                           capture_output=True, text=True, timeout=timeout + 20)
        self.assertEqual(r.returncode, 0, "labhttp failed: %s" % r.stderr)
        res = last_json(r.stdout)
        body = res.get("body")
        if res["status"] == 0:
            body = {"error": res.get("error", "no answer")}
        return res["status"], body, res["seconds"]

    def status(self, host):
        code, body, _ = self.http(host, NODE_ADMIN, "/v1/status")
        self.assertEqual(code, 200, "%s: /v1/status answered %s: %r" % (host, code, body))
        return body

    def pid_alive(self, name):
        try:
            with open(self.state_file(name + ".pid")) as f:
                pid = int(f.read().strip())
            with open("/proc/%d/status" % pid) as f:
                return not any(l.startswith("State:") and "Z" in l.split()[1] for l in f)
        except (FileNotFoundError, ValueError):
            return False

    def assert_alive(self, *names):
        for n in names:
            self.assertTrue(self.pid_alive(n), "process %s is not running any more" % n)

    def wait(self, what, cond, timeout, period=0.25):
        """Polls cond() (returns a truthy value when done) for at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = cond()
            if last:
                return last
            if time.monotonic() >= deadline:
                self.fail("timed out after %.0fs waiting for %s" % (timeout, what))
            time.sleep(period)

    # --- bringing up a lab with a signaling server and nodes ---------------------------------
    def start(self, nat_a, nat_b, nodes=("A", "B")):
        t = time.monotonic()
        self.lab("up", "--nat-a", nat_a, "--nat-b", nat_b)
        t_up = time.monotonic() - t
        token = os.path.join(self.tmp, "network.token")
        with open(token, "w") as f:
            f.write("lab-token-%s\n" % self.prefix)
        os.chmod(token, 0o600)
        self.token = "lab-token-%s" % self.prefix
        self.lab("spawn", "pub", "signal", self.bin, "signal", "--listen", SIGNAL_ADDR,
                 "--key", os.path.join(self.tmp, "signal.key"),
                 "--admin", SIGNAL_ADMIN, "--token-file", token)

        def server_up():
            if not self.pid_alive("signal"):
                self.fail("the signaling server exited")
            return self.http("pub", SIGNAL_ADMIN, "/v1/status", timeout=3)[0] == 200
        self.wait("the signaling server's admin port", server_up, 15)
        for n in nodes:
            self.start_node(n)
        t1 = time.monotonic()
        for n in nodes:
            self.wait_online("host" + n)
        self.note("lab up (%s x %s) %.1fs, nodes online %.1fs later" %
                  (nat_a, nat_b, t_up, time.monotonic() - t1))

    def start_node(self, n):
        key = os.path.join(self.tmp, "%s.key" % n.lower())
        r = subprocess.run([self.bin, "keygen", "--out", key], capture_output=True, text=True,
                           timeout=20)
        self.assertEqual(r.returncode, 0, "keygen: %s" % r.stderr)
        self.ids[n] = r.stdout.strip().splitlines()[-1].strip()
        self.assertEqual(len(self.ids[n]), 52, "unexpected node id %r" % r.stdout)
        cfg = os.path.join(self.tmp, "node%s.toml" % n)
        with open(cfg, "w") as f:
            f.write("""[node]
key = "%s"

[signal]
server = "%s"
token = "%s"

[ice]
stun = ["%s"]
turn = [{ server = "%s", user = "%s", password = "%s" }]

[admin]
listen = "%s"

[log]
level = "info"

[debug]
test_resources = true
""" % (key, SIGNAL_ADDR, self.token, TURN, TURN, TURN_USER, TURN_PASS, NODE_ADMIN))
        self.lab("spawn", "host" + n, "node" + n, self.bin, "node", "--config", cfg)

    def wait_online(self, host, timeout=ONLINE_TIMEOUT):
        name = "node" + host[-1]

        def online():
            if not self.pid_alive(name):
                self.fail("%s exited before logging in" % name)
            code, body, _ = self.http(host, NODE_ADMIN, "/v1/status", timeout=3)
            return code == 200 and body.get("signal", {}).get("state") == "online" and body
        body = self.wait("%s online at the signaling server" % name, online, timeout)
        self.assertEqual(body.get("nodeId"), self.ids[host[-1]], "admin port nodeId")
        return body

    # --- sessions and pumps ------------------------------------------------------------------
    def session_row(self, host, peer, status=None):
        st = status if status is not None else self.status(host)
        for row in st.get("sessions", {}).get("sessions", []) or []:
            if row.get("peer") == peer:
                return row
        return None

    def pump(self, host, peer, nbytes, streams=None, resource="echo"):
        path = "/v1/debug/pump/%s?resource=%s&bytes=%d" % (peer, resource, nbytes)
        if streams:
            path += "&streams=%d" % streams
        return self.http(host, NODE_ADMIN, path, timeout=PUMP_HTTP_TIMEOUT)

    def assert_pump_ok(self, res, total, streams=None):
        code, body, secs = res
        self.assertEqual(code, 200, "pump answered %s: %r" % (code, body))
        self.assertFalse(body.get("error"), "pump: %r" % body)   # "" on success
        self.assertEqual(num(body.get("sent")), total, "sent: %r" % body)
        self.assertEqual(num(body.get("received")), total, "received != sent: %r" % body)
        self.assertTrue(body.get("sentSha256"), "no sentSha256: %r" % body)
        self.assertEqual(body.get("receivedSha256"), body.get("sentSha256"),
                         "echoed bytes differ: %r" % body)
        if streams:
            self.assertEqual(num(body.get("streamsOk")), streams, "streamsOk: %r" % body)
        node_secs = float(body.get("seconds") or 0) or secs
        self.note("pump %d MiB%s: %.2fs in the node (%.1f MB/s each way), %.2fs HTTP" % (
            total // MIB, " over %d streams" % streams if streams else "", node_secs,
            total / 1e6 / node_secs if node_secs else 0.0, secs))
        return body

    def path_of(self, row):
        return "%s %s -> %s %s" % (row.get("localCandidateType"), row.get("localAddress"),
                                   row.get("remoteCandidateType"), row.get("remoteAddress"))

    def assert_direct(self, who, row):
        self.assertIsNotNone(row, "%s: no session row" % who)
        self.assertIn(row.get("state"), UP_STATES, "%s: session not up: %r" % (who, row))
        for k in ("localCandidateType", "remoteCandidateType"):
            self.assertIn(row.get(k), DIRECT_TYPES,
                          "%s: %s is %r, expected a direct path: %r" % (who, k, row.get(k), row))

    def assert_relayed(self, who, row):
        self.assertIsNotNone(row, "%s: no session row" % who)
        self.assertIn(row.get("state"), UP_STATES, "%s: session not up: %r" % (who, row))
        types = (row.get("localCandidateType"), row.get("remoteCandidateType"))
        self.assertIn("relay", types, "%s: expected a relayed path (coturn): %r" % (who, row))
        # a relay candidate is an address coturn allocated on 198.18.0.1
        side = "localAddress" if types[0] == "relay" else "remoteAddress"
        host, _, port = (row.get(side) or ":").rpartition(":")
        self.assertEqual(host, PUB_IP, "%s: relay %s not on coturn: %r" % (who, side, row))
        self.assertIn(int(port or 0), RELAY_PORTS, "%s: relay port: %r" % (who, row))

    # --- diagnostics -------------------------------------------------------------------------
    def dump_logs(self, lines=300):
        out = ["", "=" * 30 + " %s (prefix %s): logs " % (self._testMethodName, self.prefix)
               + "=" * 30]
        for name, n in (("signal", lines), ("nodeA", lines), ("nodeB", lines),
                        ("turnserver", 60)):
            path = self.state_file(name + ".log")
            try:
                with open(path, errors="replace") as f:
                    tail = f.readlines()[-n:]
            except FileNotFoundError:
                continue
            out.append("----- %s (last %d lines, %s) -----" % (name, len(tail), path))
            out.extend(l.rstrip("\n") for l in tail)
        for host in ("hostA", "hostB"):
            if not self.pid_alive("node" + host[-1]):
                continue
            try:
                code, body, _ = self.http(host, NODE_ADMIN, "/v1/status", timeout=3)
                if code == 200:
                    body = {k: body.get(k) for k in ("nodeId", "signal", "sessions")}
                out.append("----- %s /v1/status (%s) -----" % (host, code))
                out.append(json.dumps(body, indent=1)[:8000])
            except Exception as e:  # diagnostics only
                out.append("----- %s /v1/status: %s" % (host, e))
        sys.stderr.write("\n".join(out) + "\n")
        sys.stderr.flush()

    # --- 1: eim x eim, direct --------------------------------------------------------------
    @dump_logs_on_failure
    def test_1_eim_direct_64mib(self):
        self.start("eim", "eim")
        a, b = self.ids["A"], self.ids["B"]
        body = self.assert_pump_ok(self.pump("hostA", b, 64 * MIB), 64 * MIB)
        row_pump = body.get("session")
        self.assert_direct("A (pump's session row)", row_pump)
        self.assert_direct("A (status)", self.session_row("hostA", b))
        row_b = self.session_row("hostB", a)
        self.assert_direct("B (status)", row_b)
        self.note("path A: %s | B: %s | rtt %s ms" % (self.path_of(row_pump), self.path_of(row_b),
                                                      row_pump.get("rttMs")))
        self.assert_alive("nodeA", "nodeB", "signal")

    # --- 2: sym x sym, relayed -------------------------------------------------------------
    @dump_logs_on_failure
    def test_2_sym_relay_16mib(self):
        self.start("sym", "sym")
        a, b = self.ids["A"], self.ids["B"]
        body = self.assert_pump_ok(self.pump("hostA", b, 16 * MIB), 16 * MIB)
        row_pump = body.get("session")
        self.assert_relayed("A (pump's session row)", row_pump)
        row_b = self.session_row("hostB", a)
        self.assert_relayed("B (status)", row_b)
        self.note("path A: %s | B: %s | rtt %s ms" % (self.path_of(row_pump), self.path_of(row_b),
                                                      row_pump.get("rttMs")))
        self.assert_alive("nodeA", "nodeB", "signal")

    # --- 3: the signaling server dies mid-transfer ------------------------------------------
    @dump_logs_on_failure
    def test_3_signal_server_killed_mid_transfer(self):
        self.start("eim", "eim")
        a, b = self.ids["A"], self.ids["B"]
        total = 256 * MIB
        result = {}

        def run_pump():
            t = time.monotonic()
            try:
                result["res"] = self.pump("hostA", b, total)
            except BaseException as e:  # reported by the main thread
                result["exc"] = e
            result["seconds"] = time.monotonic() - t
        th = threading.Thread(target=run_pump, name="pump", daemon=True)
        t_start = time.monotonic()
        th.start()

        # kill the server once the session carries data (1 MiB sent), or after ~1 s of it
        # being ready; bounded by 60 s overall
        ready_at = [None]

        def transferring():
            if not th.is_alive():
                return "pump-ended"
            row = self.session_row("hostA", b)
            if not row or row.get("state") not in UP_STATES:
                return None
            if ready_at[0] is None:
                ready_at[0] = time.monotonic()
            if num(row.get("bytesSent")) > MIB or time.monotonic() - ready_at[0] >= 1.0:
                return row
            return None
        row_before = self.wait("A's session to carry data", transferring, 60, period=0.1)
        self.assertNotEqual(row_before, "pump-ended",
                            "the pump ended before the server could be killed: %r" % result)
        self.lab("kill", "signal")
        t_kill = time.monotonic() - t_start
        pump_running_at_kill = th.is_alive()
        self.assertFalse(self.pid_alive("signal"), "the signaling server still runs")
        self.assertTrue(pump_running_at_kill,
                        "the pump ended before the kill; nothing was tested: %r" % result)
        self.note("killed the signaling server %.2fs into the pump (A had sent %d bytes)" %
                  (t_kill, num(row_before.get("bytesSent"))))

        def offline(host):
            def cond():
                st = self.status(host)
                return st.get("signal", {}).get("state") != "online" and st
            return cond
        for host in ("hostA", "hostB"):
            st = self.wait("%s to notice the server is gone" % host, offline(host), 15)
            self.note("%s signal.state after the kill: %s" % (host, st["signal"].get("state")))
        still_running = th.is_alive()

        th.join(PUMP_HTTP_TIMEOUT + 40)
        self.assertFalse(th.is_alive(), "the pump did not return")
        if "exc" in result:
            raise result["exc"]
        self.note("pump was %s when both nodes were offline" %
                  ("still running" if still_running else "already done"))
        body = self.assert_pump_ok(result["res"], total)
        row_after = body.get("session") or {}
        self.assertIn(row_after.get("state"), UP_STATES, "session after: %r" % row_after)
        if row_before.get("sessionId") is not None:
            self.assertEqual(row_after.get("sessionId"), row_before.get("sessionId"),
                             "the session was replaced: before %r after %r" %
                             (row_before, row_after))
        # still the same session on both sides, none closed, and both nodes still offline
        for host, peer in (("hostA", b), ("hostB", a)):
            st = self.status(host)
            self.assertNotEqual(st.get("signal", {}).get("state"), "online",
                                "%s is online again with the server dead?" % host)
            row = self.session_row(host, peer, st)
            self.assertIsNotNone(row, "%s lost its session: %r" % (host, st.get("sessions")))
            self.assertIn(row.get("state"), UP_STATES, "%s: %r" % (host, row))
            closed = [r for r in st.get("sessions", {}).get("recentlyClosed", []) or []
                      if r.get("peer") == peer]
            self.assertEqual(closed, [], "%s: a session to the peer was closed" % host)
        self.assert_alive("nodeA", "nodeB")

    # --- 4: many streams at once -------------------------------------------------------------
    @dump_logs_on_failure
    def test_4_sixteen_concurrent_streams(self):
        self.start("eim", "eim")
        k, each = 16, 4 * MIB
        self.assert_pump_ok(self.pump("hostA", self.ids["B"], each, streams=k), k * each,
                            streams=k)
        self.assert_direct("A (status)", self.session_row("hostA", self.ids["B"]))
        self.assert_alive("nodeA", "nodeB", "signal")

    # --- 5: the peer is offline --------------------------------------------------------------
    @dump_logs_on_failure
    def test_5_offline_peer_fails_clearly(self):
        self.start("eim", "eim", nodes=("A",))
        for attempt in (1, 2):   # a second try must fail the same way (nothing left stuck)
            code, body, secs = self.pump("hostA", OFFLINE_ID, MIB)
            self.note("pump to an offline node, try %d: %s %r in %.2fs" %
                      (attempt, code, body, secs))
            self.assertGreaterEqual(code, 400, "expected an error status: %s %r" % (code, body))
            self.assertIsInstance(body, dict, "error body not JSON: %r" % body)
            self.assertIn("offline", str(body.get("error", "")).lower(),
                          "the error should say the peer is offline: %r" % body)
        st = self.status("hostA")
        self.assertEqual(st.get("signal", {}).get("state"), "online", "A: %r" % st.get("signal"))
        row = self.session_row("hostA", OFFLINE_ID, st)
        if row is not None:   # at most on its way out, never up
            self.assertNotIn(row.get("state"), UP_STATES, "session to an offline node: %r" % row)
        self.note("openFailures: %r" % st.get("sessions", {}).get("openFailures"))
        self.assert_alive("nodeA", "signal")


if __name__ == "__main__":
    unittest.main(verbosity=2)
