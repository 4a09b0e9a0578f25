#!/usr/bin/env python3
"""Proxy channel benchmark (not a test): the full path
client -> tcp listener on node B -> peer session -> export on node A -> server,
against a direct TCP connection to the same server in the same run.

Run through tests/bench/proxy_bench.sh, which creates the network namespace
and runs this file inside it. Standard library only. Every wait is bounded;
every process started here is stopped on the way out.

  proxy_bench.py run --bin P2PROXY --work DIR [--mib N] [--seconds S] ...
  proxy_bench.py serve --source-port P --hello-port P   (the servers)

Servers (a separate process, so they do not share the client's GIL):
- source: on accept sends one byte, then an endless stream of 1 MiB chunks
  until the client goes away (one thread per connection);
- hello: on accept sends one byte, then holds the connection open, silent,
  until the client closes it (one selector thread for all connections).
"""
import argparse
import json
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

MiB = 1 << 20
MAX_DRAIN = 45            # s: longest wait for closed channels to end
HOST = "198.18.250.1"       # on the namespace's loopback
SIGNAL_PORT = 7000
ADMIN = {"a": 7071, "b": 7072}
LISTEN = {"source": 7101, "hello": 7102}
CHUNK = 1 * MiB


# ------------------------------------------------------------------ servers
def serve(args):
    payload = os.urandom(CHUNK)

    def source_conn(c):
        try:
            c.sendall(b"!")
            while True:
                c.sendall(payload)
        except OSError:
            pass
        finally:
            c.close()

    def source_loop(ls):
        while True:
            c, _ = ls.accept()
            threading.Thread(target=source_conn, args=(c,), daemon=True).start()

    def hello_loop(ls):
        sel = selectors.DefaultSelector()
        ls.setblocking(False)
        sel.register(ls, selectors.EVENT_READ, None)
        while True:
            for key, _ in sel.select():
                if key.data is None:
                    try:
                        c, _ = ls.accept()
                    except BlockingIOError:
                        continue
                    try:
                        c.send(b"!")
                    except OSError:
                        c.close()
                        continue
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ, "conn")
                else:
                    c = key.fileobj
                    try:
                        d = c.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        d = b""
                    if not d:
                        sel.unregister(c)
                        c.close()

    socks = []
    for port in (args.source_port, args.hello_port):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, port))
        s.listen(4096)
        socks.append(s)
    threading.Thread(target=source_loop, args=(socks[0],), daemon=True).start()
    threading.Thread(target=hello_loop, args=(socks[1],), daemon=True).start()
    print("ready", flush=True)
    signal.sigwait([signal.SIGTERM, signal.SIGINT])


# ------------------------------------------------------------------ helpers
class Bench:
    def __init__(self, a):
        self.a = a
        self.procs = []
        self.rows = []          # (section, what, figure, unit, baseline, ratio, note)
        self.src_port = 7201
        self.hello_port = 7202
        self.teardown = []      # (phase, seconds until its channels ended or None)

    # processes ----------------------------------------------------------
    def spawn(self, name, argv):
        log = open(os.path.join(self.a.work, name + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        p._log = log
        p._name = name
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
            p._log.close()
        self.procs = []

    def status(self, node):
        with urllib.request.urlopen(
                f"http://127.0.0.1:{ADMIN[node]}/v1/status", timeout=10) as r:
            return json.loads(r.read().decode())

    def wait(self, pred, timeout, what, step=0.05):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = pred()
                if last:
                    return last
            except Exception as e:  # not up yet
                last = e
            time.sleep(step)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")

    def sessions(self, node):
        st = self.status(node)
        return [s for s in st.get("sessions", {}).get("sessions", [])
                if s.get("state", "") not in ("closed",)]

    def rss_kib(self, p):
        with open(f"/proc/{p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def fds(self, p):
        return len(os.listdir(f"/proc/{p.pid}/fd"))

    def cpu_s(self, p):
        with open(f"/proc/{p.pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    # setup --------------------------------------------------------------
    def setup(self):
        a = self.a
        token = os.path.join(a.work, "token")
        with open(token, "w") as f:
            f.write("bench-token\n")
        os.chmod(token, 0o600)  # token files others can read are refused
        self.spawn("signal", [a.bin, "signal", "--listen", f"{HOST}:{SIGNAL_PORT}",
                              "--key", os.path.join(a.work, "signal.key"),
                              "--token-file", token])
        srv = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve",
             "--source-port", str(self.src_port), "--hello-port", str(self.hello_port)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        srv._log = srv.stdout
        srv._name = "servers"
        self.procs.append(srv)
        if srv.stdout.readline().strip() != b"ready":
            raise RuntimeError("the source/hello servers did not start")
        common = (f'[signal]\nserver = "{HOST}:{SIGNAL_PORT}"\ntoken_file = "{token}"\n'
                  f'[log]\nlevel = "{a.log_level}"\n'
                  f'[session]\nidle_linger = "{a.linger}"\n')
        cfg_a = (f'[node]\nkey = "{a.work}/a.key"\n{common}'
                 f'[admin]\nlisten = "127.0.0.1:{ADMIN["a"]}"\n'
                 f'[[export]]\nname = "source"\ntarget = "{HOST}:{self.src_port}"\n'
                 f'allow = ["*"]\n'
                 f'[[export]]\nname = "hello"\ntarget = "{HOST}:{self.hello_port}"\n'
                 f'allow = ["*"]\n')
        cfg_b = (f'[node]\nkey = "{a.work}/b.key"\n{common}'
                 f'[admin]\nlisten = "127.0.0.1:{ADMIN["b"]}"\n'
                 + "".join(f'[[listen]]\nbind = "127.0.0.1:{port}"\nprotocol = "tcp"\n'
                           f'resource = "{name}"\n' for name, port in LISTEN.items()))
        for n, cfg in (("a", cfg_a), ("b", cfg_b)):
            path = os.path.join(a.work, f"{n}.toml")
            with open(path, "w") as f:
                f.write(cfg)
        self.node_a = self.spawn("node-a", [a.bin, "node", "--config", f"{a.work}/a.toml"])
        self.node_b = self.spawn("node-b", [a.bin, "node", "--config", f"{a.work}/b.toml"])
        for n in ("a", "b"):
            self.wait(lambda: self.status(n)["signal"]["state"] == "online", 20,
                      f"node {n} online")

    # clients ------------------------------------------------------------
    def connect(self, addr, timeout=30):
        s = socket.create_connection(addr, timeout=timeout)
        s.settimeout(timeout)
        return s

    def first_byte(self, s):
        b = s.recv(1)
        if b != b"!":
            raise RuntimeError(f"expected the server's first byte, got {b!r}")

    def tunnel(self, name):
        return ("127.0.0.1", LISTEN[name])

    def direct(self, name):
        return (HOST, self.src_port if name == "source" else self.hello_port)

    def one_channel(self, addr, nbytes):
        """MB/s from the first byte to the last of nbytes, and CPU s of both nodes."""
        s = self.connect(addr)
        try:
            self.first_byte(s)
            buf = bytearray(CHUNK)
            mv = memoryview(buf)
            got = 0
            c0 = self.cpu_s(self.node_a) + self.cpu_s(self.node_b)
            t0 = time.monotonic()
            while got < nbytes:
                n = s.recv_into(mv, min(CHUNK, nbytes - got))
                if n == 0:
                    raise RuntimeError(f"connection closed after {got} of {nbytes} bytes")
                got += n
            dt = time.monotonic() - t0
            c1 = self.cpu_s(self.node_a) + self.cpu_s(self.node_b)
            return got / dt / 1e6, (c1 - c0)
        finally:
            s.close()

    def many_channels(self, addr, n, seconds, stalled=False):
        """n readers (plus one stalled one if asked) for `seconds` after all
        have their first byte; returns each reader's MB/s over the common
        window, and the stalled reader's bytes read before and after."""
        counts = [0] * n
        stop = threading.Event()
        errors = []
        socks = []
        staller = None
        if stalled:
            staller = self.connect(addr)
            self.first_byte(staller)
            got = 0
            while got < 64 * 1024:
                d = staller.recv(64 * 1024 - got)
                if not d:
                    raise RuntimeError("stalled reader's connection closed")
                got += len(d)
            time.sleep(1.0)  # let its stream fill its window
        for _ in range(n):
            s = self.connect(addr)
            socks.append(s)
        for s in socks:
            self.first_byte(s)

        def reader(i, s):
            buf = bytearray(256 * 1024)
            try:
                while not stop.is_set():
                    k = s.recv_into(buf)
                    if k == 0:
                        if not stop.is_set():
                            errors.append(f"channel {i} closed by the proxy")
                        return
                    counts[i] += k
            except OSError as e:
                if not stop.is_set():
                    errors.append(f"channel {i}: {e}")

        threads = [threading.Thread(target=reader, args=(i, s), daemon=True)
                   for i, s in enumerate(socks)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # ramp up
        c0 = list(counts)
        t0 = time.monotonic()
        time.sleep(seconds)
        c1 = list(counts)
        dt = time.monotonic() - t0
        stop.set()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in threads:
            t.join(timeout=10)
        if errors:
            raise RuntimeError("; ".join(errors))
        rates = [(y - x) / dt / 1e6 for x, y in zip(c0, c1)]
        resumed = None
        if staller is not None:
            # The stalled reader reads again: does its channel resume?
            staller.settimeout(10)
            got, t_end = 0, time.monotonic() + 3
            try:
                while time.monotonic() < t_end:
                    d = staller.recv(CHUNK)
                    if not d:
                        break
                    got += len(d)
            except OSError:
                pass
            staller.close()
            resumed = got
        return rates, resumed

    def open_latency(self, addr):
        s = socket.socket()
        s.settimeout(60)
        try:
            t0 = time.monotonic()
            s.connect(addr)
            self.first_byte(s)
            return (time.monotonic() - t0) * 1e3
        finally:
            s.close()

    def channel_counts(self):
        """Open channels on (A, B) from /v1/status, or None if not reported."""
        out = []
        for n in ("a", "b"):
            st = self.status(n)
            if "channels" not in st and "process" not in st:
                return None
            out.append(len(st.get("channels", [])))
        return tuple(out)

    def settle(self, base, what):
        """After the clients of a phase closed: wait (bounded) until both
        nodes are back to `base` open channels, so phases do not share the
        session with channels still draining; records how long it took."""
        if base is None:
            time.sleep(1)
            return
        t0 = time.monotonic()
        try:
            self.wait(lambda: all(c <= b for c, b in zip(self.channel_counts(), base)),
                      MAX_DRAIN, f"the channels of '{what}' to end", step=0.5)
            self.teardown.append((what, time.monotonic() - t0))
        except RuntimeError:
            self.teardown.append((what, None))

    def wait_no_session(self):
        self.wait(lambda: not self.sessions("b") and not self.sessions("a"), 60,
                  "both nodes to have no session (idle linger)", step=0.05)

    # the benchmark ------------------------------------------------------
    def row(self, *r):
        self.rows.append(r)
        sec, what, fig, unit, base, ratio, note = r
        print(f"  .. {what}: {fig} {unit}" + (f" (direct TCP {base})" if base else ""),
              file=sys.stderr, flush=True)

    def run(self):
        a = self.a
        nbytes = a.mib * MiB
        jain = lambda xs: (sum(xs) ** 2) / (len(xs) * sum(x * x for x in xs)) if any(xs) else 0

        # A holder channel keeps the session up between phases (it is idle).
        holder = self.connect(self.tunnel("hello"))
        self.first_byte(holder)

        ph = set(a.phases.split(","))
        if "stall" in ph:
            ph.add("eight")  # the stalled run is compared with the 8-channel one

        if "one" in ph:
            self.phase_one(nbytes)
        agg8 = self.phase_eight(jain) if "eight" in ph else None
        if "stall" in ph:
            self.phase_stall(jain, agg8)
        if "open" in ph:
            holder = self.phase_open(holder)
        if "idle" in ph:
            self.phase_idle(holder)
        holder.close()
        for what, t in self.teardown:
            self.row("teardown", f"channels of '{what}' ended after the clients closed",
                     f"{t:.1f}" if t is not None else f"> {MAX_DRAIN}", "s", "", "",
                     "both nodes back to the open channels before the phase")

    def phase_one(self, nbytes):
        a = self.a
        d_mbs, _ = self.one_channel(self.direct("source"), nbytes)
        base = self.channel_counts()
        t_mbs, cpu = self.one_channel(self.tunnel("source"), nbytes)
        self.settle(base, "1 channel")
        self.row("1 channel", f"{a.mib} MiB, one channel", f"{t_mbs:.1f}", "MB/s",
                 f"{d_mbs:.1f}", f"{t_mbs / d_mbs:.3f}",
                 f"nodes' CPU {cpu / (nbytes / 1e9):.1f} s/GB")

    def phase_eight(self, jain):
        a = self.a
        dr, _ = self.many_channels(self.direct("source"), 8, a.seconds)
        base = self.channel_counts()
        tr, _ = self.many_channels(self.tunnel("source"), 8, a.seconds)
        self.settle(base, "8 channels")
        agg8 = sum(tr)
        self.row("8 channels", "8 channels, aggregate", f"{agg8:.1f}", "MB/s",
                 f"{sum(dr):.1f}", f"{agg8 / sum(dr):.3f}", "")
        self.row("8 channels", "8 channels, each", " ".join(f"{x:.1f}" for x in tr), "MB/s",
                 " ".join(f"{x:.0f}" for x in dr), "", "")
        self.row("8 channels", "Jain fairness (goal >= 0.95)", f"{jain(tr):.3f}", "",
                 f"{jain(dr):.3f}", "", "")
        return agg8

    def phase_stall(self, jain, agg8):
        a = self.a
        base = self.channel_counts()
        sr, resumed = self.many_channels(self.tunnel("source"), 7, a.seconds, stalled=True)
        self.settle(base, "stalled")
        agg7 = sum(sr)
        self.row("stalled", "7 running + 1 stalled, aggregate (goal >= 80 % of 8)",
                 f"{agg7:.1f}", "MB/s", f"{agg8:.1f}", f"{agg7 / agg8:.3f}",
                 f"Jain of the 7: {jain(sr):.3f}")
        self.row("stalled", "7 running + 1 stalled, each", " ".join(f"{x:.1f}" for x in sr),
                 "MB/s", "", "", "")
        self.row("stalled", "stalled reader resumes (reads 3 s after)",
                 f"{resumed / 1e6:.1f}", "MB", "", "", "")

    def phase_open(self, holder):
        """Warm (session up: the holder) then cold; returns a new holder."""
        a = self.a
        warm = []
        for _ in range(a.tries):
            warm.append(self.open_latency(self.tunnel("hello")))
            time.sleep(0.05)
        direct = []
        for _ in range(a.tries):
            direct.append(self.open_latency(self.direct("hello")))
            time.sleep(0.05)
        holder.close()
        cold = []
        for _ in range(a.cold_tries):
            self.wait_no_session()
            time.sleep(0.2)
            cold.append(self.open_latency(self.tunnel("hello")))
        dmed = statistics.median(direct)
        self.row("open", f"warm open, median of {a.tries}", f"{statistics.median(warm):.2f}",
                 "ms", f"{dmed:.2f}", "",
                 f"min {min(warm):.2f} max {max(warm):.2f}")
        self.row("open", f"cold open, median of {a.cold_tries}",
                 f"{statistics.median(cold):.1f}", "ms", f"{dmed:.2f}", "",
                 f"min {min(cold):.1f} max {max(cold):.1f}")

        holder = self.connect(self.tunnel("hello"))
        self.first_byte(holder)
        return holder

    def phase_idle(self, holder):
        """RSS per idle channel (the holder keeps the session up)."""
        a = self.a
        time.sleep(2)
        base = self.channel_counts()
        ra0, rb0 = self.rss_kib(self.node_a), self.rss_kib(self.node_b)
        fa0, fb0 = self.fds(self.node_a), self.fds(self.node_b)
        idle = []
        deadline = time.monotonic() + 300
        try:
            while len(idle) < a.idle:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(idle)} idle channels opened in 300 s")
                batch = [self.connect(self.tunnel("hello"), timeout=60)
                         for _ in range(min(50, a.idle - len(idle)))]
                for s in batch:
                    idle.append(s)
                    self.first_byte(s)
            time.sleep(2)
            ra1, rb1 = self.rss_kib(self.node_a), self.rss_kib(self.node_b)
            fa1, fb1 = self.fds(self.node_a), self.fds(self.node_b)
            chans = {}
            for n in ("a", "b"):
                try:
                    chans[n] = len(self.status(n).get("channels", []))
                except Exception:
                    chans[n] = "?"
        finally:
            for s in idle:
                s.close()
        self.settle(base, f"{a.idle} idle")
        time.sleep(1)
        ra2, rb2 = self.rss_kib(self.node_a), self.rss_kib(self.node_b)
        fa2, fb2 = self.fds(self.node_a), self.fds(self.node_b)
        n = a.idle
        for node, r0, r1, r2, f0, f1, f2, c in (
                ("B (listener)", rb0, rb1, rb2, fb0, fb1, fb2, chans["b"]),
                ("A (export)", ra0, ra1, ra2, fa0, fa1, fa2, chans["a"])):
            self.row("idle", f"RSS per idle channel, node {node} (target <= 32)",
                     f"{(r1 - r0) / n:.1f}", "KiB", "", "",
                     f"RSS {r0 / 1024:.1f} -> {r1 / 1024:.1f} -> {r2 / 1024:.1f} MiB "
                     f"(before, {n} open, closed), fds {f0} -> {f1} -> {f2}, "
                     f"status channels {c}")

    def table(self):
        print()
        print(f"p2proxy proxy benchmark: tcp listener (node B) -> session -> export "
              f"(node A) -> server, namespace loopback")
        print(f"{os.cpu_count()} cores, {cpu_model()}")
        print()
        hdr = ("section", "measure", "p2proxy", "unit", "direct TCP", "ratio", "note")
        w = [max(len(str(r[i])) for r in self.rows + [hdr]) for i in range(7)]
        fmt = " | ".join("{:<%d}" % x for x in w)
        print(fmt.format(*hdr))
        print("-+-".join("-" * x for x in w))
        for r in self.rows:
            print(fmt.format(*[str(c) for c in r]))
        sys.stdout.flush()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--source-port", type=int, required=True)
    s.add_argument("--hello-port", type=int, required=True)
    r = sub.add_parser("run")
    r.add_argument("--bin", required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--mib", type=int, default=1024)
    r.add_argument("--seconds", type=float, default=8)
    r.add_argument("--tries", type=int, default=15)
    r.add_argument("--cold-tries", type=int, default=5)
    r.add_argument("--idle", type=int, default=1000)
    r.add_argument("--linger", default="1s")
    r.add_argument("--log-level", default="warn")
    r.add_argument("--phases", default="one,eight,stall,open,idle",
                   help="comma-separated subset of one,eight,stall,open,idle")
    a = ap.parse_args()
    if a.cmd == "serve":
        serve(a)
        return 0
    b = Bench(a)
    try:
        b.setup()
        b.run()
        return 0
    except Exception as e:
        print(f"proxy_bench: {e}", file=sys.stderr)
        for name in ("node-a", "node-b"):
            p = os.path.join(a.work, name + ".log")
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    tail = f.read()[-3000:]
                print(f"--- {name}.log (tail)\n{tail}", file=sys.stderr)
        return 1
    finally:
        if b.rows:
            b.table()
        b.stop_all()


if __name__ == "__main__":
    sys.exit(main())
