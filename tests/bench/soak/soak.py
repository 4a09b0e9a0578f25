#!/usr/bin/env python3
"""Soak (issue 12): a long run of SHA-checked transfers through two NATs while the network and
the signaling server misbehave, watching both nodes for leaks. Not a CI test. Needs root.

The lab (deploy/lab/lab.sh through tests/lab/natlab.py, one prefix, eim NAT in front of each
host): the signaling server and coturn in pub, node A on hostA exporting `bulk`
(tests/lab/stallprobe.py: BYTES pseudo-random bytes per connection, paced to RATE), node B on
hostB with a `tcp` listener for it. STREAMS clients on hostB fetch through B's listener one
after another for the whole run and check every transfer's length and SHA-256.

Every minute:
   at 10 s  the signaling server is killed (SIGKILL), started again 1 s later; both nodes must
            log in again (the time is recorded)
   at 25 s  a loss burst: NAT A drops LOSS % of the packets both ways for BURST seconds
            (nft numgen random drop)
   at 40 s  with --rebind only: NAT A rebinds (its masquerade moves to a new external port
            range and its conntrack table is flushed: every mapping changes at once)
   at 55 s  both nodes' process counters (/v1/status: rssBytes, heapInUseBytes, heapFreeBytes,
            openFds, runningActors) and
            session ids are sampled

The nodes run at their defaults except idle_linger 5 s (a session with no stream closes 5 s
later, so "idle" is quickly reached). Baseline: the counters after a warm-up transfer, once
its session has lingered out and fds and actors are steady. At the end the clients stop and
the counters settle the same way. The run prints the RSS drift under load (the last minute's
sample against the one at the end of the warm-up, the first tenth of the run and at least a
minute, %), the RSS of every minute, the idle fds and actors at the end against the
baseline, transfers ok / bad, the session ids seen (a new id while clients kept fetching is
a tunnel reset), the re-login times (from the restarted server answering to both nodes
online), and exits 0 only when every transfer was byte-exact, one session carried the whole
load, every re-login took under 5 s, the RSS drift is under 5 %, and fds and actors are back to the baseline.

    sudo tests/bench/soak/soak.py [--minutes 30] [--rebind] [--streams 2] [--bytes-mib 32]
                                  [--rate-mib 8] [--loss 10] [--burst 4] [--json out.json]

SOAK_MINUTES overrides the default duration (30). Rebinding is a switch: a session rides a
rebinding out only with ICE restart / QUIC migration (issue 12, item 2).
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LABDIR = os.path.join(os.path.dirname(os.path.dirname(HERE)), "lab")
sys.path.insert(0, LABDIR)
import natlab  # noqa: E402
import stallprobe  # noqa: E402

PROBE = os.path.join(LABDIR, "stallprobe.py")
BULK_ADDR = "127.0.0.1:9002"
LISTEN_ADDR = "127.0.0.1:9000"
MIB = 1 << 20


def log(msg):
    sys.stdout.write("[%s] %s\n" % (time.strftime("%H:%M:%S", time.gmtime()), msg))
    sys.stdout.flush()


class Soak:
    def __init__(self, a):
        self.a = a
        self.bin = os.path.abspath(a.bin or natlab.find_binary() or "")
        if not os.access(self.bin, os.X_OK):
            sys.exit("p2proxy binary not found: --bin or P2PROXY_BIN")
        self.prefix = "sk%d" % (os.getpid() % 100000)
        self.lab = natlab.NatLab(self.bin, self.prefix, "eim", "eim", log=log, log_level="info")
        self.nbytes = a.bytes_mib * MIB
        self.want = stallprobe.expected(self.nbytes, 11)
        self.stop = threading.Event()
        self.ok, self.bad = 0, []
        self.lock = threading.Lock()
        self.relogins, self.samples, self.sessions_seen = [], [], {"A": [], "B": []}
        self.rebind_round = 0

    # --- the lab ------------------------------------------------------------------------
    def up(self):
        lab = self.lab
        lab.lab("up", "--nat-a", "eim", "--nat-b", "eim")
        token = os.path.join(lab.tmp, "network.token")
        lab.token = "lab-token-%s" % self.prefix
        with open(token, "w") as f:
            f.write(lab.token + "\n")
        os.chmod(token, 0o600)
        self.start_signal()
        lab.lab("spawn", "hostA", "bulk", natlab.PY, PROBE, "serve", "--bind", BULK_ADDR,
                "--bytes", str(self.nbytes), "--rate", str(self.a.rate_mib * MIB), "--seed",
                "11", "--duration", str(self.a.minutes * 60 + 600))
        linger = '\n[session]\nidle_linger = "5s"\n'
        lab.start_node("A", linger + """
[[export]]
name = "bulk"
target = "%s"
allow = ["*"]
""" % BULK_ADDR)
        lab.start_node("B", linger + """
[[listen]]
bind = "%s"
protocol = "tcp"
resource = "bulk"
""" % LISTEN_ADDR)
        for n in ("A", "B"):
            lab.wait_online(n)
        lab.wait("node B's listener", lambda: lab.in_ns(
            "hostB", ["ss", "-Hltn", "src", LISTEN_ADDR], 10).stdout.strip() != "", 15)

    def start_signal(self):
        lab = self.lab
        lab.lab("spawn", "pub", "signal", self.bin, "signal", "--listen", natlab.SIGNAL_ADDR,
                "--key", os.path.join(lab.tmp, "signal.key"), "--admin", natlab.SIGNAL_ADMIN,
                "--token-file", os.path.join(lab.tmp, "network.token"))
        lab.wait("the signaling server", lambda: lab.pid_alive("signal") and lab.http(
            "pub", natlab.SIGNAL_ADMIN, "/v1/status", timeout=3)[0] == 200, 15)

    # --- load ---------------------------------------------------------------------------
    def fetch_once(self, timeout=120):
        r = self.lab.in_ns("hostB", [natlab.PY, PROBE, "fetch", "--to", LISTEN_ADDR,
                                     "--timeout", str(timeout)], timeout + 30)
        res = natlab.last_json(r.stdout) or {"end": "no result: %s" % r.stderr[-300:]}
        good = (res.get("end") == "eof" and res.get("bytes") == self.nbytes
                and res.get("sha256") == self.want)
        return good, res

    def client(self, i):
        while not self.stop.is_set():
            good, res = self.fetch_once()
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.bad.append(res)
                    log("client %d: BAD transfer %r" % (i, res))

    # --- events -------------------------------------------------------------------------
    def restart_signal(self):
        with open(self.lab.state_file("signal.pid")) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGKILL)   # killed, not stopped: no goodbye to the nodes
        self.lab.lab("kill", "signal")  # reaps it and forgets its pid file
        time.sleep(1.0)
        self.start_signal()
        t0 = time.monotonic()  # the server answers: from here to both nodes logged in
        try:
            for n in ("A", "B"):
                self.lab.wait_online(n, timeout=30)
            took = time.monotonic() - t0
        except natlab.LabError as e:
            took = None
            log("re-login failed: %s" % e)
        self.relogins.append(took)
        return took

    def loss_burst(self):
        self.lab.lab("impair", "natA", "--loss", str(self.a.loss))
        time.sleep(self.a.burst)
        self.lab.lab("impair", "natA", "--loss", "0")

    def rebind(self):
        """NAT A maps to a new external port range and forgets every mapping."""
        self.rebind_round += 1
        lo = 20000 + (self.rebind_round % 40) * 1000
        rules = ("flush chain ip lab postrouting\n"
                 "add rule ip lab postrouting oifname \"wan\" meta l4proto udp masquerade "
                 "to :%d-%d\n"
                 "add rule ip lab postrouting oifname \"wan\" masquerade\n" % (lo, lo + 999))
        for argv, stdin in ((["nft", "-f", "-"], rules), (["conntrack", "-F"], None)):
            r = subprocess.run(["ip", "netns", "exec", self.lab.ns("natA"), *argv],
                               input=stdin, capture_output=True, text=True, timeout=10)
            if r.returncode != 0:
                raise natlab.LabError("%s: %s" % (" ".join(argv), r.stderr.strip()))
        return lo

    def process(self):
        out = {}
        for n in ("A", "B"):
            st = self.lab.status("host" + n)
            p = st.get("process", {})
            rows = st.get("sessions", {}).get("sessions", []) or []
            out[n] = {"rss": natlab.num(p.get("rssBytes")), "fds": natlab.num(p.get("openFds")),
                      "heap_used": natlab.num(p.get("heapInUseBytes")),
                      "heap_free": natlab.num(p.get("heapFreeBytes")),
                      "actors": natlab.num(p.get("runningActors")),
                      "sessions": [r.get("sessionId") for r in rows],
                      "closed": len(st.get("sessions", {}).get("recentlyClosed", []) or [])}
            for sid in out[n]["sessions"]:
                if sid not in self.sessions_seen[n]:
                    self.sessions_seen[n].append(sid)
        return out

    def settled(self, timeout=90):
        """The process counters once both nodes have no session (idle_linger 5 s) and fds
        and actors have not changed for 3 s."""
        deadline = time.monotonic() + timeout
        last = self.process()
        while (last["A"]["sessions"] or last["B"]["sessions"]) and time.monotonic() < deadline:
            time.sleep(0.5)
            last = self.process()
        since = time.monotonic()
        key = lambda p: tuple((p[n]["fds"], p[n]["actors"]) for n in ("A", "B"))
        while time.monotonic() - since < 3.0 and time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.process()
            if key(now) != key(last):
                last, since = now, time.monotonic()
        return last

    # --- the run ------------------------------------------------------------------------
    def run(self):
        a = self.a
        t_start = time.monotonic()
        self.up()
        log("lab up in %.1fs (prefix %s); warm-up transfer" % (time.monotonic() - t_start,
                                                              self.prefix))
        good, res = self.fetch_once()
        if not good:
            raise natlab.LabError("the warm-up transfer failed: %r" % res)
        base = self.settled()
        log("baseline: %s" % fmt(base))
        clients = [threading.Thread(target=self.client, args=(i,), daemon=True)
                   for i in range(a.streams)]
        for c in clients:
            c.start()
        t0 = time.monotonic()
        events = {"signal restarts": 0, "loss bursts": 0, "rebinds": 0}
        for minute in range(a.minutes):
            m0 = t0 + minute * 60

            def at(s):
                left = m0 + s - time.monotonic()
                if left > 0:
                    time.sleep(left)
            at(10)
            took = self.restart_signal()
            events["signal restarts"] += 1
            at(25)
            self.loss_burst()
            events["loss bursts"] += 1
            rebound = None
            if a.rebind:
                at(40)
                rebound = self.rebind()
                events["rebinds"] += 1
            at(55)
            s = self.process()
            s["minute"] = minute + 1
            self.samples.append(s)
            with self.lock:
                ok, bad = self.ok, len(self.bad)
            log("minute %d: %s; re-login %s; %s transfers ok, %d bad%s" % (
                minute + 1, fmt(s), "%.2fs" % took if took is not None else "FAILED", ok, bad,
                "; rebound to ports %d+" % rebound if rebound else ""))
        at_end = time.monotonic()
        self.stop.set()
        for c in clients:
            c.join(200)
        end = self.settled()
        return self.summary(base, end, at_end - t0, events)

    def summary(self, base, end, seconds, events):
        res = {"minutes": round(seconds / 60, 2), "transfers_ok": self.ok,
               "transfers_bad": len(self.bad), "bad": self.bad[:20],
               "bytes_each": self.nbytes, "streams": self.a.streams, "events": events,
               "relogin_s": [None if t is None else round(t, 2) for t in self.relogins],
               "baseline": base, "end": end, "samples": self.samples,
               "sessions_seen": self.sessions_seen, "rebind": self.a.rebind}
        # the sessions the per-minute samples saw: one unless the tunnel was reset
        res["load_sessions"] = {
            n: sorted({sid for smp in self.samples for sid in smp[n]["sessions"]})
            for n in ("A", "B")}
        verdict = res["transfers_bad"] == 0 and self.ok > 0 and all(
            len(res["load_sessions"][n]) == 1 for n in ("A", "B")) and all(
            t is not None and t < 5.0 for t in self.relogins)
        # RSS under load: the last minute's sample against the end of the warm-up (the first
        # tenth of the run, at least a minute: allocator arenas and buffers grow first)
        warm = max(1, round(len(self.samples) / 10))
        first, last = self.samples[warm - 1], self.samples[-1]
        res["rss_base_minute"] = warm
        for n in ("A", "B"):
            drift = 100.0 * (last[n]["rss"] - first[n]["rss"]) / max(1, first[n]["rss"])
            res["rss_drift_pct_" + n] = round(drift, 2)
            res["rss_first_" + n], res["rss_last_" + n] = first[n]["rss"], last[n]["rss"]
            verdict = verdict and drift < 5.0 and end[n]["fds"] == base[n]["fds"] and \
                end[n]["actors"] == base[n]["actors"]
        res["ok"] = verdict
        return res


def fmt(p):
    return "; ".join("%s rss %.1f MiB (heap in use %.1f, free %.1f) fds %d actors %d sessions %s" % (
        n, p[n]["rss"] / MIB, p[n]["heap_used"] / MIB, p[n]["heap_free"] / MIB, p[n]["fds"],
        p[n]["actors"], p[n]["sessions"]) for n in ("A", "B"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.environ.get("P2PROXY_BIN", ""))
    ap.add_argument("--minutes", type=int, default=int(os.environ.get("SOAK_MINUTES", "30")))
    ap.add_argument("--rebind", action="store_true", help="one NAT rebinding a minute")
    ap.add_argument("--streams", type=int, default=2, help="clients fetching at once")
    ap.add_argument("--bytes-mib", type=int, default=32, help="MiB per transfer")
    ap.add_argument("--rate-mib", type=float, default=8, help="MiB/s each transfer is paced to")
    ap.add_argument("--loss", type=float, default=10, help="%% loss during a burst")
    ap.add_argument("--burst", type=float, default=4, help="seconds a loss burst lasts")
    ap.add_argument("--json", default="", help="write the summary here")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("the soak needs root (network namespaces)")
    if a.rebind and not shutil.which("conntrack"):
        sys.exit("--rebind needs conntrack (apt-get install conntrack)")
    if a.minutes < 1 or a.streams < 1 or a.burst >= 15:
        sys.exit("--minutes and --streams at least 1, --burst under 15 s")
    soak = Soak(a)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    log("soak: %d min, %d streams of %d MiB at %.0f MiB/s, loss bursts %.0f %% for %.0f s, "
        "rebinding %s; %s" % (a.minutes, a.streams, a.bytes_mib, a.rate_mib, a.loss, a.burst,
                              "on" if a.rebind else "off", soak.bin))
    res = None
    try:
        res = soak.run()
    except natlab.LabError as e:
        log("lab error: %s" % e)
        sys.stderr.write(soak.lab.logs(80) + "\n")
    finally:
        if res is None or not res["ok"]:
            try:
                sys.stderr.write(soak.lab.logs(60) + "\n")
            except Exception:  # diagnostics only
                pass
        soak.stop.set()
        soak.lab.down()
    if res is None:
        return 1
    report(res, a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0 if res["ok"] else 1


def report(res, a):
    relog = [t for t in res["relogin_s"] if t is not None]
    print("\n=== soak summary (%.1f min, rebinding %s) ===" % (res["minutes"],
                                                            "on" if a.rebind else "off"))
    print("transfers: %d ok, %d bad (%d x %d MiB streams)" % (
        res["transfers_ok"], res["transfers_bad"], a.streams, a.bytes_mib))
    print("sessions during the load: A %s, B %s (more than one: a tunnel reset)" % (
        res["load_sessions"]["A"], res["load_sessions"]["B"]))
    print("events: %s; re-login max %s s, failed %d" % (
        res["events"], "%.2f" % max(relog) if relog else "-",
        len(res["relogin_s"]) - len(relog)))
    for n in ("A", "B"):
        b, e = res["baseline"][n], res["end"][n]
        print("node %s: RSS under load %.1f MiB (minute %d) -> %.1f MiB (minute %d): drift "
              "%+.2f %%; idle RSS %.1f -> %.1f MiB; idle fds %d -> %d, actors %d -> %d; "
              "sessions seen %d" % (
                  n, res["rss_first_" + n] / MIB, res["rss_base_minute"],
                  res["rss_last_" + n] / MIB,
                  len(res["samples"]), res["rss_drift_pct_" + n], b["rss"] / MIB,
                  e["rss"] / MIB, b["fds"], e["fds"], b["actors"], e["actors"],
                  len(res["sessions_seen"][n])))
    print("RSS per minute (MiB): A %s; B %s" % tuple(
        " ".join("%.1f" % (smp[n]["rss"] / MIB) for smp in res["samples"]) for n in ("A", "B")))
    print("verdict: %s" % ("ok" if res["ok"] else "FAILED"))


if __name__ == "__main__":
    sys.exit(main())
