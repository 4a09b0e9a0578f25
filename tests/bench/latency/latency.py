#!/usr/bin/env python3
"""Latency benchmark (not a test; prints, asserts nothing): p2proxy against ssh -L and the
plain path, in the NAT lab, on a 10 Mbit/s, 40 ms RTT path.

    sudo tests/bench/latency/run.sh [--bin build/p2proxy] [--quick] [--count 500]
                                    [--rtsp-seconds 60] [--parts rr,bulk,stream] [--json FILE]

One lab (deploy/lab/lab.sh, prefix `lat` + pid), endpoint-independent NATs (eim) on both sides,
so p2proxy's session goes direct. natA is the path: `lab.sh impair natA --rate 10 --delay 20`
(tbf at 10 Mbit/s each way, the NFQUEUE delayer holding every packet 20 ms each way: 40 ms RTT);
for the stream part also `--loss 1` (nft random drop, 1 % each way).

hostA runs lat_server.py (TCP echo, TCP bulk source, gst-rtsp-server with a raw-video track whose
frames carry the time they were made, the same RTP over UDP to whoever says hello); hostB runs
lat_client.py through each of:

  direct   the same servers through a port forward on natA's WAN address (nft DNAT): the path
           itself, no tunnel (its round trip is the path RTT the others are compared with);
  p2proxy  node B's listeners (tcp echo, tcp bulk, rtsp cam, udp camudp) -> one session ->
           node A's exports; signaling server and coturn in pub;
  ssh -L   sshd in hostA reached through the same port forward; one ssh client in hostB with
           three -L forwards (echo, bulk, rtsp) on one connection.

Parts:
  rr      100-byte request/response rounds on an idle path: RTT p50/p99 per tool;
  bulk    the same while a bulk download runs on another channel of the same session (p2proxy),
          another -L channel of the same ssh connection (ssh -L), another TCP connection (direct);
  stream  8 Mbit/s of RTP (raw video, 25 fps, 40 000-byte frames) with 1 % loss for
          --rtsp-seconds: frame delay p50/p99 and frames lost, whole run, first and last window
          (a third of the run, at most 60 s): RTSP over interleaved TCP (direct, p2proxy, ssh -L),
          RTSP with UDP transport through p2proxy's rtsp listener (a 461 answer is printed as
          "not supported by this build"), and the same RTP as UDP datagrams through a `udp`
          listener/export pair (QUIC DATAGRAMs) and directly.

Everything runs in the lab's namespaces and goes with `lab.sh down` (also on error, Ctrl-C or
--max-minutes); every step has a time bound. LATENCY_QUICK=1 or --quick: a smoke run (50 rounds,
8 s of stream).
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(REPO, "tests", "lab"))
import natlab  # noqa: E402

SERVER = os.path.join(HERE, "lat_server.py")
CLIENT = os.path.join(HERE, "lat_client.py")
GI_PY = "/usr/bin/python3"      # Debian's python3 has gi (python3-gi)
NATA_WAN = "198.18.0.2"
HOSTA_LAN = "198.18.1.2"
PORT = {"echo": 7101, "bulk": 7102, "udp": 7103, "rtsp": 8554}
P2P = {"echo": 9000, "bulk": 9001, "udp": 9003, "rtsp": 9554}
SSH = {"echo": 9100, "bulk": 9101, "rtsp": 9102}
RATE_MBIT, DELAY_MS, LOSS_PCT = 10, 20, 1
PACKAGES = {"sshd": "openssh-server", "ssh": "openssh-client"}
TOOLS = ("direct", "p2proxy", "ssh -L")
SERIES_KEYS = ("sent", "droppedExpired", "droppedCongestion", "lost")


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def which(cmd):
    return shutil.which(cmd) or (os.path.exists("/usr/sbin/" + cmd) and "/usr/sbin/" + cmd)


def install():
    missing = sorted({pkg for cmd, pkg in PACKAGES.items() if not which(cmd)})
    if not missing:
        return
    log("apt-get install %s" % " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing],
                       env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        sys.exit("latency: apt-get install %s failed:\n%s" % (" ".join(missing),
                                                              r.stderr[-2000:]))


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100.0 * (len(xs) - 1))))]


def f1(x, unit=""):
    return "-" if x is None else "%.1f%s" % (x, unit)


class Bench:
    def __init__(self, a):
        self.a = a
        self.lab = natlab.NatLab(a.bin, a.prefix, "eim", "eim", log=log, log_level="warn")
        self.tmp = tempfile.mkdtemp(prefix="p2proxy-latency-")
        os.chmod(self.tmp, 0o700)
        self.rr = {}          # (part, tool) -> {"rtt": [...], "bulk_mbit": x, "error": ...}
        self.streams = []     # rows of the stream part
        self.path = ""
        self.bg = []

    # --- helpers --------------------------------------------------------------------------
    def nsx(self, host, *argv, timeout=30, check=True):
        r = self.lab.in_ns(host, list(argv), timeout)
        if check and r.returncode != 0:
            raise natlab.LabError("%s: %s failed (%d): %s%s" % (host, " ".join(argv),
                                                                r.returncode, r.stdout, r.stderr))
        return r

    def wait_port(self, host, port, what, proto="t", timeout=20):
        def listening():
            return self.nsx(host, "ss", "-Hl%sn" % proto, "sport", "=", ":%d" % port,
                            timeout=10).stdout.strip() != ""
        self.lab.wait(what, listening, timeout)

    def client(self, *argv, timeout):
        r = self.lab.in_ns("hostB", [natlab.PY, CLIENT, *argv], timeout)
        res = natlab.last_json(r.stdout)
        if res is None:
            raise natlab.LabError("lat_client %s printed nothing (rc %d): %s"
                                  % (argv[0], r.returncode, r.stderr[-1500:]))
        return res

    def tail(self, name, n=15):
        try:
            with open(self.lab.state_file(name + ".log"), errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except FileNotFoundError:
            return "(no log)"

    # --- bring-up -------------------------------------------------------------------------
    def up(self):
        L = self.lab
        L.lab("up", "--nat-a", "eim", "--nat-b", "eim", timeout=120)
        rules = "table ip latfwd {\n chain prerouting {\n"
        rules += "  type nat hook prerouting priority -100; policy accept;\n"
        for name in ("echo", "bulk", "rtsp"):
            rules += '  iifname "wan" tcp dport %d dnat to %s:%d\n' % (PORT[name], HOSTA_LAN,
                                                                       PORT[name])
        rules += '  iifname "wan" udp dport %d dnat to %s:%d\n' % (PORT["udp"], HOSTA_LAN,
                                                                   PORT["udp"])
        rules += '  iifname "wan" tcp dport 2222 dnat to %s:22\n }\n}\n' % HOSTA_LAN
        r = subprocess.run(["ip", "netns", "exec", L.ns("natA"), "nft", "-f", "-"], input=rules,
                           capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            raise natlab.LabError("nft (DNAT on natA): %s" % r.stderr)
        self.nsx("natA", "nft", "insert", "rule", "ip", "lab", "forward", "iifname", "wan",
                 "ct", "status", "dnat", "accept")
        L.lab("spawn", "hostA", "latserver", GI_PY, SERVER, "--echo", str(PORT["echo"]),
              "--bulk", str(PORT["bulk"]), "--rtsp", str(PORT["rtsp"]), "--udp",
              str(PORT["udp"]), "--duration", str(int(self.a.max_minutes * 60)))

        def server_up():
            if not L.pid_alive("latserver"):
                raise natlab.LabError("lat_server exited: %s" % self.tail("latserver"))
            return "ready" in self.tail("latserver", 50)
        L.wait("lat_server in hostA", server_up, 30)
        self.up_p2proxy()
        self.up_ssh()

    def up_p2proxy(self):
        L = self.lab
        token = os.path.join(L.tmp, "network.token")
        L.token = "lab-token-%s" % L.prefix
        with open(token, "w") as f:
            f.write(L.token + "\n")
        os.chmod(token, 0o600)
        L.lab("spawn", "pub", "signal", L.bin, "signal", "--listen", natlab.SIGNAL_ADDR,
              "--key", os.path.join(L.tmp, "signal.key"),
              "--admin", natlab.SIGNAL_ADMIN, "--token-file", token)
        L.wait("the signaling server's admin port",
               lambda: L.http("pub", natlab.SIGNAL_ADMIN, "/v1/status", timeout=3)[0] == 200, 15)
        exports = "".join('\n[[export]]\nname = "%s"\ntarget = "127.0.0.1:%d"\nprotocol = "%s"\n'
                          'allow = ["*"]\n' % (n, PORT[p], proto)
                          for n, p, proto in (("echo", "echo", "tcp"), ("bulk", "bulk", "tcp"),
                                              ("cam", "rtsp", "rtsp"), ("camudp", "udp", "udp")))
        listens = "".join('\n[[listen]]\nbind = "127.0.0.1:%d"\nprotocol = "%s"\n'
                          'resource = "%s"\n' % (P2P[p], proto, n)
                          for n, p, proto in (("echo", "echo", "tcp"), ("bulk", "bulk", "tcp"),
                                              ("cam", "rtsp", "rtsp"), ("camudp", "udp", "udp")))
        extra = "\n" + self.a.node_config.replace("\\n", "\n") + "\n"
        L.start_node("A", extra + exports)
        L.start_node("B", extra + listens)
        for n in ("A", "B"):
            L.wait_online(n)
        for name in ("echo", "bulk", "rtsp"):
            self.wait_port("hostB", P2P[name], "node B's %s listener" % name)
        self.wait_port("hostB", P2P["udp"], "node B's udp listener", proto="u")
        log("p2proxy nodes online")

    def up_ssh(self):
        L, d = self.lab, os.path.join(self.tmp, "ssh")
        os.makedirs(d)
        for k in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            os.path.join(d, k)], check=True, timeout=30, capture_output=True)
        shutil.copy(os.path.join(d, "client.pub"), os.path.join(d, "authorized_keys"))
        cfg = os.path.join(d, "sshd_config")
        with open(cfg, "w") as f:
            f.write("ListenAddress %s\nPort 22\nHostKey %s/host\n"
                    "AuthorizedKeysFile %s/authorized_keys\nPermitRootLogin prohibit-password\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                    "StrictModes no\nAllowTcpForwarding yes\nPidFile none\n"
                    % (HOSTA_LAN, d, d))
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        L.lab("spawn", "hostA", "sshd", which("sshd"), "-D", "-e", "-f", cfg)
        self.wait_port("hostA", 22, "sshd in hostA")
        fwd = []
        for name in ("echo", "bulk", "rtsp"):
            fwd += ["-L", "127.0.0.1:%d:127.0.0.1:%d" % (SSH[name], PORT[name])]
        L.lab("spawn", "hostB", "sshc", "ssh", "-N", "-i", os.path.join(d, "client"),
              "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
              "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
              "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15",
              *fwd, "-p", "2222", "root@%s" % NATA_WAN)
        for name in ("echo", "bulk", "rtsp"):
            self.wait_port("hostB", SSH[name], "ssh -L %s in hostB" % name, timeout=30)
        log("ssh -L up (one connection, three forwards)")

    def impair(self, loss):
        L = self.lab
        L.lab("impair", "natA", "--clear", timeout=60)
        args = ["--rate", str(RATE_MBIT), "--delay", str(DELAY_MS)]
        if loss:
            args += ["--loss", str(LOSS_PCT)]
        L.lab("impair", "natA", *args, timeout=60)

    def addr(self, tool, name):
        if tool == "direct":
            return "%s:%d" % (NATA_WAN, PORT[name])
        if tool == "p2proxy":
            return "127.0.0.1:%d" % P2P[name]
        return "127.0.0.1:%d" % SSH[name]

    def session_path(self):
        try:
            row = self.lab.session_row("hostB", self.lab.ids["A"])
        except natlab.LabError as e:
            return "? (%s)" % e
        if not row:
            return "? (no session row)"
        lt, rt = row.get("localCandidateType"), row.get("remoteCandidateType")
        return "%s (%s-%s)" % ("relayed" if "relay" in (lt, rt) else "direct", lt, rt)

    def session_rows(self):
        """Both nodes' session rows for each other (or None)."""
        rows = {}
        for n, peer in (("A", "B"), ("B", "A")):
            try:
                rows[n] = self.lab.session_row("host" + n, self.lab.ids[peer])
            except (natlab.LabError, subprocess.TimeoutExpired):
                rows[n] = None
        return rows

    def sampled(self, fn):
        """Runs fn() while sampling node A's session row (A sends the bulk data and the stream)
        once a second: QUIC's smoothed RTT and congestion window; and both nodes' datagram
        counters before and after. Returns (fn's result, the samples' summary)."""
        samples, series, stop = [], [], threading.Event()
        t0 = time.monotonic()

        def loop():
            while not stop.wait(1.0):
                row = self.session_rows().get("A")
                if row:
                    samples.append((row.get("rttMs"), row.get("cwndBytes")))
                    dg = row.get("datagrams") or {}
                    series.append([round(time.monotonic() - t0, 1), row.get("rttMs"),
                                   row.get("cwndBytes"),
                                   *[natlab.num(dg.get(k)) for k in SERIES_KEYS]])
        before = self.session_rows()
        t = threading.Thread(target=loop, daemon=True)
        t.start()
        try:
            res = fn()
        finally:
            stop.set()
            t.join(timeout=30)
        after = self.session_rows()
        rtts = [float(r) for r, _ in samples if r not in (None, "")]
        cwnds = [float(c) for _, c in samples if c not in (None, "")]
        summ = {"quic_srtt_ms": [pct(rtts, 50), max(rtts) if rtts else None],
                "quic_cwnd_kb": [pct(cwnds, 50) and pct(cwnds, 50) / 1e3,
                                 max(cwnds) / 1e3 if cwnds else None],
                "datagrams": {}, "series": series}
        for n in ("A", "B"):
            b, e = (before.get(n) or {}).get("datagrams") or {}, \
                (after.get(n) or {}).get("datagrams") or {}
            delta = {k: natlab.num(e.get(k)) - natlab.num(b.get(k)) for k in e
                     if isinstance(e.get(k), (int, float, str))}
            summ["datagrams"][n] = {k: v for k, v in delta.items() if v}
        return res, summ

    # --- parts ----------------------------------------------------------------------------
    def rr_once(self, tool):
        a = self.a
        return self.client("rr", "--to", self.addr(tool, "echo"), "--count", str(a.count),
                           "--gap", str(a.gap), "--max-seconds", str(a.rr_seconds),
                           timeout=a.rr_seconds + 60)

    def part_rr(self):
        for tool in TOOLS:
            res = self.rr_once(tool)
            self.rr[("idle", tool)] = {"rtt": res.get("rtt_ms", []), "error": res.get("error")}
            log("idle    %-8s p50 %s p99 %s ms" % (tool, f1(pct(res.get("rtt_ms"), 50)),
                                                   f1(pct(res.get("rtt_ms"), 99))))

    def part_bulk(self):
        for tool in TOOLS:
            p = subprocess.Popen(["ip", "netns", "exec", self.lab.ns("hostB"), natlab.PY, CLIENT,
                                  "bulk", "--to", self.addr(tool, "bulk"),
                                  "--seconds", str(self.a.rr_seconds + 60)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.bg.append(p)
            try:
                time.sleep(self.a.ramp)          # the bulk transfer fills the path first
                early = p.poll()
                if tool == "p2proxy":
                    res, diag = self.sampled(lambda: self.rr_once(tool))
                    res["diag"] = diag
                else:
                    res = self.rr_once(tool)
            finally:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                try:
                    so, se = p.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    so, se = p.communicate(timeout=10)
                self.bg.remove(p)
            b = natlab.last_json(so) or {"error": "bulk client printed nothing: %s" % se[-300:]}
            err = res.get("error") or b.get("error") or (
                "bulk ended before the rounds" if early is not None else "")
            time.sleep(3)    # what the bulk sender still had queued drains first
            self.rr[("bulk", tool)] = {"rtt": res.get("rtt_ms", []), "error": err,
                                       "bulk_mbit": b.get("mbit_s"), "diag": res.get("diag")}
            log("bulk    %-8s p50 %s p99 %s ms, bulk %s Mbit/s %s" % (
                tool, f1(pct(res.get("rtt_ms"), 50)), f1(pct(res.get("rtt_ms"), 99)),
                b.get("mbit_s"), err or ""))

    def part_stream(self):
        a = self.a
        secs = a.rtsp_seconds
        window = min(60.0, secs / 3.0)
        # RTSP first: the datagram rows load the session most (their end is the run's end)
        rows = [("direct", "RTSP, TCP client",
                 ["--rtsp", "rtsp://%s:%d/stream" % (NATA_WAN, PORT["rtsp"]), "--transport",
                  "tcp"]),
                ("p2proxy", "RTSP, TCP client",
                 ["--rtsp", "rtsp://127.0.0.1:%d/cam/stream" % P2P["rtsp"], "--transport",
                  "tcp"]),
                ("ssh -L", "RTSP, TCP client",
                 ["--rtsp", "rtsp://127.0.0.1:%d/stream" % SSH["rtsp"], "--transport", "tcp"]),
                ("p2proxy", "RTSP, UDP client",
                 ["--rtsp", "rtsp://127.0.0.1:%d/cam/stream" % P2P["rtsp"], "--transport",
                  "udp"]),
                ("direct", "UDP (RTP datagrams)", ["--udp", self.addr("direct", "udp")]),
                ("p2proxy", "UDP (RTP datagrams, udp listener)",
                 ["--udp", "127.0.0.1:%d" % P2P["udp"]])]
        for tool, what, args in rows:
            if a.stream_rows and not any(s in "%s %s" % (tool, what) for s in a.stream_rows):
                continue
            def play():
                return self.client("stream", *args, "--seconds", str(secs), "--window",
                                   str(window), timeout=secs + 90)
            try:
                if tool == "p2proxy":
                    res, diag = self.sampled(play)
                    res["diag"] = diag
                else:
                    res = play()
            except (natlab.LabError, subprocess.TimeoutExpired) as e:
                res = {"error": str(e)[-500:]}
            res["tool"], res["what"] = tool, what
            self.streams.append(res)
            if res.get("supported") is False:
                log("stream  %-8s %s: not supported by this build (%s)" % (
                    tool, what, res.get("answer")))
                continue
            time.sleep(7)     # the UDP server sends to a client 5 s after its last hello
            al = res.get("all", {})
            log("stream  %-8s %s: p50 %s p99 %s ms, lost %s %% %s" % (
                tool, what, f1(al.get("p50_ms")), f1(al.get("p99_ms")), al.get("lost_pct"),
                res.get("error", "")))

    # --- report ---------------------------------------------------------------------------
    def report(self):
        a = self.a
        out = []
        cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"],
                             capture_output=True, text=True).stdout.strip()
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        out.append("p2proxy latency benchmark: lab eim x eim, natA %d Mbit/s each way, %d ms "
                   "each way (RTT %d ms); %d cores (%s), load average %s"
                   % (RATE_MBIT, DELAY_MS, 2 * DELAY_MS, os.cpu_count(), cpu, load))
        conf = a.node_config.replace("\\n", " ")
        out.append("p2proxy session: %s%s" % (self.path, "; node config: " + conf if conf else ""))

        def q(part, tool, p):
            r = self.rr.get((part, tool))
            return pct(r["rtt"], p) if r and r["rtt"] else None
        if self.rr:
            out.append("")
            out.append("100-byte request/response, %d rounds (or %.0f s), %.0f ms apart "
                       "(RTT in ms)" % (a.count, a.rr_seconds, a.gap * 1e3))
            hdr = "%-34s %14s %14s %14s %12s" % ("", "direct path", "p2proxy", "ssh -L",
                                                 "ssh/p2proxy")
            out.append(hdr)

            def line(label, part, p, rel=False):
                vals = [q(part, t, p) for t in TOOLS]
                if rel:
                    base = q(part, "direct", p)
                    vals = [None if v is None or base is None else v - base for v in vals]
                ratio = (vals[2] / vals[1]) if vals[1] and vals[2] is not None and not rel \
                    else None
                out.append("%-34s %14s %14s %14s %12s" % (label, *[f1(v) for v in vals],
                                                          "-" if ratio is None
                                                          else "%.2f" % ratio))
            for part, name in (("idle", "idle"), ("bulk", "bulk beside")):
                if (part, "direct") not in self.rr:
                    continue
                out.append("%-34s %14s %14s %14s" % (
                    "%s: rounds" % name, *[len((self.rr.get((part, t)) or {}).get("rtt", []))
                                           for t in TOOLS]))
                line("%s: p50" % name, part, 50)
                line("%s: p99" % name, part, 99)
                line("%s: added over direct, p50" % name, part, 50, rel=True)
                line("%s: added over direct, p99" % name, part, 99, rel=True)
            if ("bulk", "direct") in self.rr:
                out.append("%-34s %14s %14s %14s" % (
                    "bulk beside: its rate (Mbit/s)",
                    *[f1((self.rr.get(("bulk", t)) or {}).get("bulk_mbit")) for t in TOOLS]))
            dg = (self.rr.get(("bulk", "p2proxy")) or {}).get("diag")
            if dg:
                out.append("p2proxy with bulk: node A's QUIC smoothed RTT median %s, max %s ms; "
                           "cwnd median %s, max %s KB" % (*[f1(x) for x in dg["quic_srtt_ms"]],
                                                          *[f1(x) for x in dg["quic_cwnd_kb"]]))
            errs = ["%s/%s: %s" % (p, t, r["error"]) for (p, t), r in self.rr.items()
                    if r.get("error")]
            if errs:
                out.append("errors: " + "; ".join(errs))
            i99, b99, s99 = q("idle", "p2proxy", 99), q("bulk", "p2proxy", 99), \
                q("bulk", "ssh -L", 99)
            if i99 is not None and b99 is not None:
                lim = 2 * i99 + 5
                out.append("target: p2proxy p99 with bulk <= 2 x idle p99 + 5 ms: %.1f <= %.1f: "
                           "%s" % (b99, lim, "met" if b99 <= lim else "MISSED"))
            if b99 and s99 is not None:
                out.append("target: >= 10 x better than ssh -L with bulk (p99): %.2f x: %s"
                           % (s99 / b99, "met" if s99 / b99 >= 10 else "MISSED"))
        if self.streams:
            one_way = DELAY_MS
            d50 = q("idle", "direct", 50)
            if d50 is not None:
                one_way = d50 / 2
            out.append("")
            out.append("stream: 8 Mbit/s RTP (25 fps, 40 000-byte frames), %d %% loss each way, "
                       "%.0f s; frame delay in ms (frame's last packet in - frame made), "
                       "windows of %.0f s" % (LOSS_PCT, a.rtsp_seconds,
                                              min(60.0, a.rtsp_seconds / 3.0)))
            out.append("%-8s %-34s %7s %7s %7s %7s %7s %15s %15s %7s" % (
                "tool", "client", "frames", "lost %", "pkts %", "p50", "p99", "p99 (lost %) first",
                "last", "behind"))
            for r in self.streams:
                if r.get("supported") is False:
                    out.append("%-8s %-34s not supported by this build (%s)" % (
                        r["tool"], r["what"], r.get("answer", "")))
                    continue
                if "all" not in r:
                    out.append("%-8s %-34s FAILED: %s" % (r["tool"], r["what"],
                                                          r.get("error", "?")))
                    continue
                al, fi, la = r["all"], r["first"], r["last"]
                out.append("%-8s %-34s %7d %7s %7s %7s %7s %15s %15s %7s" % (
                    r["tool"], r["what"], al["frames"], "%.2f" % al["lost_pct"],
                    f1(r.get("packets_lost_pct")),
                    f1(al["p50_ms"]), f1(al["p99_ms"]),
                    "%s (%s%%)" % (f1(fi["p99_ms"]), fi["lost_pct"]),
                    "%s (%s%%)" % (f1(la["p99_ms"]), la["lost_pct"]),
                    f1(r.get("behind_at_end_ms"))))
            for r in self.streams:
                dg = r.get("diag")
                if dg and r.get("supported") is not False and "all" in r:
                    out.append("%s, %s: packets lost %s %%; node A's QUIC smoothed RTT median %s, "
                               "max %s ms, cwnd median %s KB; datagram counters A %s B %s" % (
                                   r["tool"], r["what"], r.get("packets_lost_pct"),
                                   *[f1(x) for x in dg["quic_srtt_ms"]],
                                   f1(dg["quic_cwnd_kb"][0]), json.dumps(dg["datagrams"]["A"]),
                                   json.dumps(dg["datagrams"]["B"])))
                if dg and "datagrams" in r["what"] and dg.get("series"):
                    out.append("  node A over time (s: QUIC srtt ms, cwnd KB, datagrams sent / "
                               "expired / dropped for the window / lost, since the last line):")
                    prev = None
                    for e in dg["series"]:
                        if prev is not None and e[0] - prev[0] < 9.5 and e is not dg["series"][-1]:
                            continue
                        if prev is not None:
                            out.append("  %5.0f: %6s %7s %s" % (
                                e[0], f1(float(e[1] or 0)), f1(float(e[2] or 0) / 1e3),
                                " / ".join(str(x - y) for x, y in zip(e[3:], prev[3:]))))
                        prev = e
            lim = one_way + 50
            for r in self.streams:
                if r["tool"] != "p2proxy" or "UDP" not in r["what"] or "all" not in r:
                    continue
                al, fi, la = r["all"], r["first"], r["last"]
                flat = (la["p99_ms"] or 0) - (fi["p99_ms"] or 0)
                out.append("target (%s): p99 <= one-way %.1f + 50 ms: %s; flat: last - first "
                           "window p99 %+.1f ms; lost <= 2 %%: %.2f %%: %s" % (
                               r["what"], one_way,
                               "met (%.1f)" % al["p99_ms"] if al["p99_ms"] <= lim
                               else "MISSED (%.1f)" % al["p99_ms"], flat, al["lost_pct"],
                               "met" if al["lost_pct"] <= 2 else "MISSED"))
        return "\n".join(out)

    def down(self):
        for p in self.bg:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        try:
            self.lab.down()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default=None, help="p2proxy binary (default: $P2PROXY_BIN, else the "
                   "newest build*/p2proxy)")
    p.add_argument("--quick", action="store_true", default=os.environ.get("LATENCY_QUICK") == "1",
                   help="a smoke run: 50 rounds, 8 s of stream (also LATENCY_QUICK=1)")
    p.add_argument("--count", type=int, default=None, help="request rounds per run (500)")
    p.add_argument("--gap", type=float, default=0.01, help="s between rounds (0.01)")
    p.add_argument("--rr-seconds", type=float, default=None,
                   help="at most this long per series of rounds (60; a slow tool does fewer)")
    p.add_argument("--ramp", type=float, default=3.0, help="s of bulk before the rounds (3)")
    p.add_argument("--rtsp-seconds", type=float, default=None,
                   help="s per stream row (60; env LATENCY_RTSP_SECONDS)")
    p.add_argument("--parts", default="rr,bulk,stream")
    p.add_argument("--stream-rows", default="",
                   help="only stream rows whose 'tool client' contains one of these (comma)")
    p.add_argument("--prefix", default="lat%d" % (os.getpid() % 10000))
    p.add_argument("--json", help="also write the raw results here")
    p.add_argument("--node-config", default="",
                   help="TOML added to both nodes' configuration, \\n for a line break, e.g. "
                   "'[session]\\ncongestion_control = \"bbr2\"'")
    p.add_argument("--max-minutes", type=float, default=30)
    a = p.parse_args()
    if a.count is None:
        a.count = 50 if a.quick else 500
    if a.rr_seconds is None:
        a.rr_seconds = 15.0 if a.quick else 60.0
    if a.rtsp_seconds is None:
        a.rtsp_seconds = float(os.environ.get("LATENCY_RTSP_SECONDS", "8" if a.quick else "60"))
    a.parts = [x for x in a.parts.split(",") if x]
    a.stream_rows = [x for x in a.stream_rows.split(",") if x]
    if os.geteuid() != 0:
        sys.exit("latency: needs root (network namespaces)")
    a.bin = os.path.abspath(a.bin) if a.bin else natlab.find_binary()
    if not a.bin or not os.access(a.bin, os.X_OK):
        sys.exit("latency: no p2proxy binary (--bin, or build first)")
    missing = natlab.missing_tools()
    if missing:
        sys.exit("latency: missing %s (deploy/install-deps.sh)" % " ".join(missing))
    install()

    def stop(signum, _frame):
        raise SystemExit("latency: stopped by signal %d" % signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(
        SystemExit("latency: --max-minutes %.0f reached" % a.max_minutes)))
    signal.alarm(int(a.max_minutes * 60))

    b = Bench(a)
    rc = 0
    try:
        log("lab %s up (eim x eim), binary %s" % (a.prefix, a.bin))
        b.up()
        b.impair(loss=False)
        # open the session (a cold open is not what is measured here)
        warm = b.client("rr", "--to", b.addr("p2proxy", "echo"), "--count", "5",
                        timeout=90)
        if warm.get("error"):
            raise natlab.LabError("p2proxy echo: %s" % warm["error"])
        b.path = b.session_path()
        log("p2proxy session: %s" % b.path)
        if "rr" in a.parts:
            b.part_rr()
        if "bulk" in a.parts:
            b.part_bulk()
        if "stream" in a.parts:
            time.sleep(3)
            b.impair(loss=True)
            b.part_stream()
    except (natlab.LabError, subprocess.TimeoutExpired) as e:
        log("latency: %s" % e)
        for n in ("nodeA", "nodeB", "latserver", "sshd", "sshc"):
            log("--- %s:\n%s" % (n, b.tail(n)))
        rc = 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # the teardown is not interrupted
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if b.rr or b.streams:
                print(b.report(), flush=True)
                if a.json:
                    with open(a.json, "w") as f:
                        json.dump({"rr": {"%s/%s" % k: v for k, v in b.rr.items()},
                                   "streams": b.streams, "path": b.path}, f, indent=1)
        except Exception as e:  # a partial run is torn down all the same
            log("latency: the report failed: %r" % e)
            rc = 1
        finally:
            log("tearing down lab %s" % a.prefix)
            b.down()
    return rc


if __name__ == "__main__":
    sys.exit(main())
