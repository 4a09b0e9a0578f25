#!/usr/bin/env python3
"""The NAT matrix's moving parts, shared by tests/bench/nat_matrix.py (the benchmark) and
tests/lab/test_nat_matrix.py (its CI subset). Standard library only; needs root.

One *pair* is one lab (deploy/lab/lab.sh, its own --prefix) with NAT kind `nat_a` in front of
hostA and `nat_b` in front of hostB:

  pub    p2proxy signal (198.18.0.10:7000) and coturn (198.18.0.1:3478, UDP and TCP)
  hostA  a banner server on 127.0.0.1:9001 (sends one line on accept), and node A exporting it
         as `banner`
  hostB  node B with a `tcp` listener on 127.0.0.1:9000 for resource `banner` (no peer pinned:
         B looks the resource up at the signaling server)

Then a client in hostB connects to 127.0.0.1:9000 and times connect() -> first byte of the
banner: that is a *cold open* (look-up, ICE, QUIC handshake, stream, the export's TCP connect,
the banner back). A second connection times a *warm open* over the same session and sends 1 MiB
that the server counts. Node B's /v1/status session row for A gives the candidate pair (the
status has no relay transport); a relay leg's transport (UDP or TCP between its node and coturn)
is TCP when that node's TCP connections to coturn (`ss -tni` in its namespace) carried the 1 MiB.

Path classes: host, srflx, prflx (direct: the "most translated" type of the pair), relay-UDP,
relay-TCP (relayed: TCP if any allocation on the path reaches coturn over TCP).

The module also runs as the two small programs used inside the namespaces:
  natlab.py banner --bind IP:PORT --line TEXT --duration S
  natlab.py open --to IP:PORT --expect TEXT --timeout S      one JSON line: connected, seconds...
                 [--send N] [--idle S]   then N bytes (after S silent seconds): sent, send_s
"""
import argparse
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LAB = os.path.join(REPO, "deploy", "lab", "lab.sh")
HTTP = os.path.join(HERE, "labhttp.py")
SELF = os.path.abspath(__file__)
PY = sys.executable or "python3"
RUN_ROOT = "/run/p2proxy-lab"

KINDS = ("none", "eim", "sym", "udp-blocked")
PUB_IP, PUB_IP2 = "198.18.0.1", "198.18.0.10"
SIGNAL_ADDR = "%s:7000" % PUB_IP2
SIGNAL_ADMIN = "127.0.0.1:7071"  # inside the pub namespace: loopback needs no admin token
TURN = "%s:3478" % PUB_IP
TURN_USER, TURN_PASS = "lab", "lab-secret"
NODE_ADMIN = "127.0.0.1:7070"
LISTEN_ADDR = "127.0.0.1:9000"      # node B's tcp listener
BANNER_ADDR = "127.0.0.1:9001"      # the exported server on hostA
RESOURCE = "banner"
DIRECT_TYPES = ("host", "srflx", "prflx")
UP_STATES = ("ready", "lingering")
TOOLS = ("ip", "nft", "tc", "iptables", "turnserver")

ONLINE_TIMEOUT = 30.0
PROBE_BYTES = 1 << 20     # sent on the warm open, to see which TURN leg (UDP or TCP) carries it
OPEN_TIMEOUT = 40.0       # the node gives up on a session after 20 s (connect_timeout) + open


def find_binary():
    b = os.environ.get("P2PROXY_BIN", "")
    if b:
        return b if os.access(b, os.X_OK) else None
    found = [p for p in glob.glob(os.path.join(REPO, "build*", "p2proxy")) if os.access(p, os.X_OK)]
    return max(found, key=os.path.getmtime) if found else None


def num(v):
    """A status counter (JSON numbers may come as strings; absent is 0)."""
    if v is None or v == "":
        return 0
    return int(float(v))


def missing_tools():
    return [t for t in TOOLS if shutil.which(t) is None]


def require_lab(test, what, tools=(), missing=()):
    """What every lab test checks first: root, the lab's tools (and `tools`,
    and the names in `missing` its caller found absent), the p2proxy binary.
    A gap skips `test` with what to do, or fails it under CI=true, where
    the lab must run. Returns the binary's absolute path."""
    def unavailable(msg):
        if os.environ.get("CI", "").lower() == "true":
            test.fail(msg + " (CI=true: this is a failure, not a skip)")
        test.skipTest(msg)
    if os.geteuid() != 0:
        unavailable("%s need root (network namespaces): run them as root" % what)
    gaps = missing_tools() + [t for t in tools if shutil.which(t) is None] + list(missing)
    if gaps:
        unavailable("tools missing: %s (run deploy/install-deps.sh)" % " ".join(gaps))
    b = find_binary()
    if not b:
        unavailable("p2proxy binary not found: set P2PROXY_BIN (ctest does) or build it")
    return os.path.abspath(b)


def expected_direct(nat_a, nat_b):
    """Issue #5: direct where both sides map endpoint-independently or one side is public."""
    return "none" in (nat_a, nat_b) or (nat_a == "eim" and nat_b == "eim")


def expected_class(nat_a, nat_b):
    """The coarse class a pair should reach: 'direct', 'relay-UDP' or 'relay-TCP'."""
    if "udp-blocked" in (nat_a, nat_b):
        return "relay-TCP"
    return "direct" if expected_direct(nat_a, nat_b) else "relay-UDP"


def coarse(path_class):
    return "direct" if path_class in DIRECT_TYPES else path_class


def last_json(text):
    for line in reversed((text or "").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    return None


class LabError(Exception):
    pass


class NatLab:
    """One pair's lab. Use as a context manager: __exit__ tears everything down by name."""

    def __init__(self, binary, prefix, nat_a, nat_b, log=None, log_level="debug"):
        self.bin = binary
        self.log_level = log_level
        self.prefix = prefix
        self.nat_a, self.nat_b = nat_a, nat_b
        self.log = log or (lambda msg: None)
        self.tmp = tempfile.mkdtemp(prefix="p2proxy-%s-" % prefix)
        os.chmod(self.tmp, 0o700)
        self.ids = {}
        self.banner_line = "banner from A via %s" % prefix

    # --- plumbing --------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.down()
        return False

    def down(self):
        try:
            self.lab("down", check=False, timeout=120)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def lab(self, *args, check=True, timeout=90):
        r = subprocess.run([LAB, "--prefix", self.prefix, *args], capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise LabError("lab.sh %s failed (%d): %s%s" % (" ".join(args), r.returncode,
                                                            r.stdout, r.stderr))
        return r

    def ns(self, host):
        return "%s-%s" % (self.prefix, host)

    def state_file(self, name):
        return os.path.join(RUN_ROOT, self.prefix, name)

    def in_ns(self, host, argv, timeout):
        r = subprocess.run(["ip", "netns", "exec", self.ns(host), *argv], capture_output=True,
                           text=True, timeout=timeout)
        return r

    def http(self, host, addr, path, timeout=10.0):
        """GET inside HOST's namespace: (status, body); status 0: no HTTP answer."""
        r = self.in_ns(host, [PY, HTTP, "http://%s%s" % (addr, path), "--timeout", str(timeout)],
                       timeout + 20)
        res = last_json(r.stdout)
        if res is None:
            raise LabError("labhttp printed nothing: %s" % r.stderr)
        body = res.get("body")
        if res["status"] == 0:
            body = {"error": res.get("error", "no answer")}
        return res["status"], body

    def status(self, host):
        code, body = self.http(host, NODE_ADMIN, "/v1/status")
        if code != 200:
            raise LabError("%s: /v1/status answered %s: %r" % (host, code, body))
        return body

    def pid_alive(self, name):
        try:
            with open(self.state_file(name + ".pid")) as f:
                pid = int(f.read().strip())
            with open("/proc/%d/status" % pid) as f:
                return not any(l.startswith("State:") and "Z" in l.split()[1] for l in f)
        except (FileNotFoundError, ValueError):
            return False

    def wait(self, what, cond, timeout, period=0.2):
        deadline = time.monotonic() + timeout
        while True:
            v = cond()
            if v:
                return v
            if time.monotonic() >= deadline:
                raise LabError("timed out after %.0fs waiting for %s" % (timeout, what))
            time.sleep(period)

    # --- bring-up ------------------------------------------------------------------------
    def up(self):
        """Lab, signaling server, banner server, node A (export), node B (listener), both
        online. Returns seconds spent."""
        t0 = time.monotonic()
        self.lab("up", "--nat-a", self.nat_a, "--nat-b", self.nat_b)
        token = os.path.join(self.tmp, "network.token")
        self.token = "lab-token-%s" % self.prefix
        with open(token, "w") as f:
            f.write(self.token + "\n")
        os.chmod(token, 0o600)
        self.lab("spawn", "pub", "signal", self.bin, "signal", "--listen", SIGNAL_ADDR,
                 "--key", os.path.join(self.tmp, "signal.key"),
                 "--admin", SIGNAL_ADMIN, "--token-file", token)

        def server_up():
            if not self.pid_alive("signal"):
                raise LabError("the signaling server exited")
            return self.http("pub", SIGNAL_ADMIN, "/v1/status", timeout=3)[0] == 200
        self.wait("the signaling server's admin port", server_up, 15)
        self.lab("spawn", "hostA", "banner", PY, SELF, "banner", "--bind", BANNER_ADDR,
                 "--line", self.banner_line, "--duration", "900")
        self.start_node("A", """
[[export]]
name = "%s"
target = "%s"
allow = ["*"]
""" % (RESOURCE, BANNER_ADDR))
        self.start_node("B", """
[[listen]]
bind = "%s"
protocol = "tcp"
resource = "%s"
""" % (LISTEN_ADDR, RESOURCE))
        for n in ("A", "B"):
            self.wait_online(n)

        def banner_up():
            if not self.pid_alive("banner"):
                raise LabError("the banner server exited")
            with open(self.state_file("banner.log")) as f:
                return "ready" in f.read()
        self.wait("the banner server", banner_up, 10)

        def listening():
            r = self.in_ns("hostB", ["ss", "-Hltn", "src", LISTEN_ADDR], 10)
            return r.stdout.strip() != ""
        self.wait("node B's listener on %s" % LISTEN_ADDR, listening, 15)
        return time.monotonic() - t0

    def start_node(self, n, extra):
        key = os.path.join(self.tmp, "%s.key" % n.lower())
        r = subprocess.run([self.bin, "keygen", "--out", key], capture_output=True, text=True,
                           timeout=20)
        if r.returncode != 0:
            raise LabError("keygen: %s" % r.stderr)
        self.ids[n] = r.stdout.strip().splitlines()[-1].strip()
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
level = "%s"
%s""" % (key, SIGNAL_ADDR, self.token, TURN, TURN, TURN_USER, TURN_PASS, NODE_ADMIN,
         self.log_level, extra))
        self.lab("spawn", "host" + n, "node" + n, self.bin, "node", "--config", cfg)

    def wait_online(self, n, timeout=ONLINE_TIMEOUT):
        host, name = "host" + n, "node" + n

        def online():
            if not self.pid_alive(name):
                raise LabError("%s exited before logging in" % name)
            code, body = self.http(host, NODE_ADMIN, "/v1/status", timeout=3)
            return code == 200 and body.get("signal", {}).get("state") == "online" and body
        self.wait("%s online at the signaling server" % name, online, timeout)

    # --- measuring -----------------------------------------------------------------------
    def open_once(self, timeout=OPEN_TIMEOUT, send=0):
        """A client in hostB connects to B's listener, reads the banner line, then sends
        `send` bytes (the banner server drains them) and waits for the export to take them."""
        r = self.in_ns("hostB", [PY, SELF, "open", "--to", LISTEN_ADDR, "--expect",
                                 self.banner_line, "--timeout", str(timeout),
                                 "--send", str(send)], timeout + 20)
        res = last_json(r.stdout)
        if res is None:
            raise LabError("the client printed nothing: %s" % r.stderr)
        return res

    def session_row(self, host, peer):
        st = self.status(host)
        for row in st.get("sessions", {}).get("sessions", []) or []:
            if row.get("peer") == peer:
                return row
        return None

    def turn_tcp_bytes(self, n):
        """Bytes node N's TCP connections to coturn have carried (sent + received, from
        `ss -tni` in hostN): TURN over TCP shows here, TURN over UDP does not."""
        r = self.in_ns("host" + n, ["ss", "-Htni", "state", "established", "dst", TURN], 10)
        total = 0
        for m in re.finditer(r"\bbytes_(?:sent|received):(\d+)", r.stdout):
            total += int(m.group(1))
        return total

    def path_class(self, row, tcp_relay):
        """(class, detail) of node B's session row: a direct type, or relay-UDP / relay-TCP.
        tcp_relay: {"A": bool, "B": bool}, whether that node's TURN-over-TCP connection carried
        the probe transfer (its relay allocation on the path is reached over TCP)."""
        lt, rt = row.get("localCandidateType"), row.get("remoteCandidateType")
        pair = "%s-%s" % (lt, rt)
        if "relay" not in (lt, rt):
            for t in ("prflx", "srflx", "host"):
                if t in (lt, rt):
                    return t, pair
            return "unknown", pair
        # B's local relay is B's allocation; B's remote relay is A's
        owners = ([("B", lt)] if lt == "relay" else []) + ([("A", rt)] if rt == "relay" else [])
        legs = ["%s:%s" % (o, "TCP" if tcp_relay.get(o) else "UDP") for o, _ in owners]
        cls = "relay-TCP" if any(tcp_relay.get(o) for o, _ in owners) else "relay-UDP"
        return cls, "%s (relay %s)" % (pair, " ".join(legs))

    def measure(self, probe_bytes=PROBE_BYTES):
        """The whole pair: a dict with connected, error, cold_s, warm_s, class, detail, rows.
        Raises LabError when the lab itself cannot be brought up."""
        res = {"nat_a": self.nat_a, "nat_b": self.nat_b, "connected": False, "error": "",
               "cold_s": None, "warm_s": None, "class": "-", "detail": "", "up_s": None,
               "sessions_before": None}
        res["up_s"] = self.up()
        # a cold open: no session (to anyone) on either node before the client connects
        res["sessions_before"] = sum(
            len(self.status(h).get("sessions", {}).get("sessions", []) or [])
            for h in ("hostA", "hostB"))
        cold = self.open_once()
        res["cold"] = cold
        if not cold.get("connected"):
            res["error"] = cold.get("error") or "no banner"
            return res
        res["connected"] = True
        res["cold_s"] = cold["seconds"]
        a, b = self.ids["A"], self.ids["B"]

        def b_row_up():
            r = self.session_row("hostB", a)
            return r if r and r.get("state") in UP_STATES else None
        row_b = self.wait("B's session row for A to be up", b_row_up, 10)
        res.update(self.open_phases())
        # the warm open sends probe_bytes after the banner: a TURN-over-TCP leg carries them
        before = {n: self.turn_tcp_bytes(n) for n in ("A", "B")}
        warm = self.open_once(send=probe_bytes)
        after = {n: self.turn_tcp_bytes(n) for n in ("A", "B")}
        res["warm"] = warm
        if warm.get("connected") and warm.get("sent") == probe_bytes:
            res["warm_s"] = warm["seconds"]
        else:
            res["error"] = "warm open: %s" % (warm.get("error") or "no banner")
        res["turn_tcp_delta"] = {n: after[n] - before[n] for n in ("A", "B")}
        tcp_relay = {n: res["turn_tcp_delta"][n] >= probe_bytes // 2 for n in ("A", "B")}
        row_b = self.session_row("hostB", a) or row_b
        row_a = self.session_row("hostA", b)
        res["row_b"], res["row_a"] = row_b, row_a
        res["class"], res["detail"] = self.path_class(row_b, tcp_relay)
        return res

    def open_phases(self):
        """Where the cold open's time went, from node B's debug log: ice_s (session start to
        ICE connected) and quic_s (QUIC handshake). None when the log lacks the lines."""
        marks = {}
        pats = (("start", "starts as controlling"), ("ice", "moves connecting-ice -> handshaking"),
                ("quic", "moves handshaking -> ready"))
        try:
            with open(self.state_file("nodeB.log"), errors="replace") as f:
                for line in f:
                    for key, pat in pats:
                        if key not in marks and pat in line and self.ids["A"] in line:
                            marks[key] = _log_time(line)
        except FileNotFoundError:
            pass

        def span(a, b):
            if marks.get(a) is None or marks.get(b) is None:
                return None
            return round(marks[b] - marks[a], 4)
        return {"ice_s": span("start", "ice"), "quic_s": span("ice", "quic")}

    def logs(self, lines=80):
        out = []
        for name, n in (("signal", lines // 2), ("nodeA", lines), ("nodeB", lines),
                        ("banner", 10), ("coturn", lines)):
            path = self.state_file(name + ".log")
            try:
                with open(path, errors="replace") as f:
                    tail = f.readlines()[-n:]
            except FileNotFoundError:
                continue
            out.append("----- %s (last %d lines, %s) -----" % (name, len(tail), path))
            out.extend(l.rstrip("\n") for l in tail)
        for n in ("A", "B"):
            if not self.pid_alive("node" + n):
                out.append("----- node%s is not running" % n)
                continue
            try:
                code, body = self.http("host" + n, NODE_ADMIN, "/v1/status", timeout=3)
                if code == 200:
                    body = {k: body.get(k) for k in ("nodeId", "signal", "sessions")}
                out.append("----- host%s /v1/status (%s) -----" % (n, code))
                out.append(json.dumps(body, indent=1)[:6000])
            except Exception as e:  # diagnostics only
                out.append("----- host%s /v1/status: %s" % (n, e))
        return "\n".join(out)


def _log_time(line):
    """Seconds (since midnight) of a node log line's ISO time stamp, or None."""
    m = re.match(r"\d{4}-\d\d-\d\dT(\d\d):(\d\d):(\d\d(?:\.\d+)?)Z", line)
    if not m:
        return None
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


# --- the programs run inside namespaces -------------------------------------------------------
def hp(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def cmd_banner(a):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(hp(a.bind))
    srv.listen(64)
    srv.settimeout(0.5)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    print("ready", flush=True)
    line = (a.line + "\n").encode()
    deadline = time.monotonic() + a.duration

    def serve(c):
        # the banner at once; then, if the client says "SINK N", read N bytes and answer
        # "got N" (how the client knows its bytes crossed the tunnel); hold until it closes
        try:
            c.settimeout(300)  # a client may hold its connection silent (test_keepalive)
            c.sendall(line)
            buf = b""
            while b"\n" not in buf and len(buf) < 100:
                chunk = c.recv(100)
                if not chunk:
                    return
                buf += chunk
            head, _, rest = buf.partition(b"\n")
            if head.startswith(b"SINK "):
                want, got = int(head[5:]), len(rest)
                while got < want:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    got += len(chunk)
                c.sendall(b"got %d\n" % got)
            while c.recv(65536):
                pass
        except (OSError, ValueError):
            pass
        finally:
            c.close()
    while not stop[0] and time.monotonic() < deadline:
        try:
            c, _ = srv.accept()
        except socket.timeout:
            continue
        threading.Thread(target=serve, args=(c,), daemon=True).start()
    srv.close()


def cmd_open(a):
    res = {"connected": False, "seconds": None, "error": ""}
    want = (a.expect + "\n").encode()
    t0 = time.monotonic()
    try:
        with socket.create_connection(hp(a.to), timeout=a.timeout) as c:
            res["tcp_connect_s"] = round(time.monotonic() - t0, 4)
            data = b""
            end = t0 + a.timeout
            while time.monotonic() < end:
                c.settimeout(max(0.01, end - time.monotonic()))
                chunk = c.recv(4096)
                if not chunk:
                    res["error"] = "closed by the listener after %d bytes" % len(data)
                    break
                if not data:
                    res["first_byte_s"] = round(time.monotonic() - t0, 4)
                data += chunk
                if b"\n" in data:
                    break
            res["received"] = data.decode(errors="replace")
            if data == want:
                res["connected"] = True
                res["seconds"] = res["first_byte_s"]
            elif data and not res["error"]:
                res["error"] = "unexpected bytes: %r" % data[:200]
            elif not res["error"]:
                res["error"] = "no byte within %.0fs" % a.timeout
            if res["connected"] and a.idle > 0:
                time.sleep(a.idle)  # the connection stays open and silent
                end = time.monotonic() + a.timeout
            if res["connected"] and a.send > 0:
                t_send = time.monotonic()
                c.settimeout(max(0.01, end - time.monotonic()))
                c.sendall(b"SINK %d\n" % a.send + os.urandom(a.send))
                reply = b""
                while b"\n" not in reply and time.monotonic() < end:
                    c.settimeout(max(0.01, end - time.monotonic()))
                    chunk = c.recv(100)
                    if not chunk:
                        break
                    reply += chunk
                if reply == b"got %d\n" % a.send:
                    res["sent"] = a.send
                    res["send_s"] = round(time.monotonic() - t_send, 4)
                else:
                    res["error"] = "probe transfer: the server answered %r" % reply[:100]
    except OSError as e:
        res["error"] = "%s: %s" % (type(e).__name__, e)
    res["total_s"] = round(time.monotonic() - t0, 4)
    print(json.dumps(res), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("banner")
    s.add_argument("--bind", required=True)
    s.add_argument("--line", required=True)
    s.add_argument("--duration", type=float, default=600)
    s = sub.add_parser("open")
    s.add_argument("--to", required=True)
    s.add_argument("--expect", required=True)
    s.add_argument("--timeout", type=float, default=30)
    s.add_argument("--send", type=int, default=0)
    s.add_argument("--idle", type=float, default=0,
                   help="seconds to hold the connection silent after the banner, before --send")
    a = p.parse_args()
    {"banner": cmd_banner, "open": cmd_open}[a.cmd](a)


if __name__ == "__main__":
    main()
