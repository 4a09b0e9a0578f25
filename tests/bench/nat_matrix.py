#!/usr/bin/env python3
"""NAT matrix (issue #5, item 2): for every pair of NAT kinds in front of the two hosts of the lab
(deploy/lab/lab.sh: none, eim, sym, udp-blocked), bring up a fresh lab with the signaling server
and coturn (UDP and TCP) in pub, node A exporting a tiny TCP server (it sends one line on accept)
and node B with a `tcp` listener for it, then connect a client on hostB to the listener and
record:

  connected   the banner line arrived intact through the tunnel
  path        host / srflx / prflx (direct) or relay-UDP / relay-TCP, from node B's /v1/status
              session row (candidate types); a relay leg's transport is the one whose TURN
              connection carried a 1 MiB transfer (TCP bytes to coturn, from `ss`, per node)
  cold open   client connect() -> first byte, the first time (look-up, ICE, QUIC, stream, the
              export's connect, the line back)
  warm open   the same over the session the cold open left behind

All 16 ordered pairs by default (A is the exporting side, B the client's; rows are A, columns
B): who opens the session and who exports is not symmetric, so (x, y) and (y, x) are both run.
Each pair runs in its own lab prefix, one after another, and is torn down by name
(`lab.sh down --prefix ...`) whatever happens, also on Ctrl-C / SIGTERM. Every step is bounded;
a pair takes ~10-30 s.

Needs root. Usage (from anywhere):

    sudo tests/bench/nat_matrix.py [--bin build/p2proxy] [--kinds none,eim,sym,udp-blocked]
                                   [--json out.json] [--logs DIR]

Exit code 0 when every pair connected with the expected path class, 1 otherwise.
"""
import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lab"))
import natlab  # noqa: E402

COLD_BOUND = {"direct": 1.5, "relay-UDP": 3.0, "relay-TCP": 3.0}   # issue #5 targets, seconds


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%s, %d cores, Linux %s" % (cpu or platform.processor(), os.cpu_count() or 0,
                                       platform.release())


def version(binary):
    try:
        r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except Exception:  # informational only
        return "?"


def verdict(res):
    if not res.get("connected"):
        return "FAIL: not connected"
    want = natlab.expected_class(res["nat_a"], res["nat_b"])
    got = natlab.coarse(res["class"])
    notes = []
    if got != want:
        notes.append("expected %s" % want)
    bound = COLD_BOUND.get(got)
    if bound is not None and res["cold_s"] is not None and res["cold_s"] > bound:
        notes.append("cold open > %.1f s" % bound)
    if res.get("sessions_before"):
        notes.append("a session existed before the client connected: not a cold open")
    if res.get("error"):
        notes.append(res["error"])
    return "ok" if not notes else "MISS: " + "; ".join(notes)


def run_pair(binary, prefix, nat_a, nat_b, logs_dir, log_level):
    t0 = time.monotonic()
    res = {"nat_a": nat_a, "nat_b": nat_b, "connected": False, "class": "-", "detail": "",
           "cold_s": None, "warm_s": None, "error": ""}
    lab = natlab.NatLab(binary, prefix, nat_a, nat_b, log_level=log_level)
    try:
        res = lab.measure()
    except natlab.LabError as e:
        res["error"] = str(e)
    except subprocess.TimeoutExpired as e:
        res["error"] = "timed out: %s" % e
    finally:
        res["verdict"] = verdict(res)
        if logs_dir and res["verdict"] != "ok":
            os.makedirs(logs_dir, exist_ok=True)
            path = os.path.join(logs_dir, "%s-x-%s.log" % (nat_a, nat_b))
            try:
                with open(path, "w") as f:
                    f.write(json.dumps(res, indent=1, default=str) + "\n" + lab.logs(400))
                res["log"] = path
            except Exception as e:  # diagnostics only
                res["log"] = "could not write %s: %s" % (path, e)
        lab.down()
        res["pair_s"] = time.monotonic() - t0
    return res


def fmt_s(v):
    return "-" if v is None else "%.2f s" % v


def print_tables(results, kinds, out=sys.stdout):
    by = {(r["nat_a"], r["nat_b"]): r for r in results}
    w = max(len(k) for k in kinds)
    out.write("\nPath and cold open (rows: A, the exporting side; columns: B, the client's side)\n\n")
    out.write("| A \\ B | " + " | ".join(kinds) + " |\n")
    out.write("|---|" + "---|" * len(kinds) + "\n")
    for a in kinds:
        cells = []
        for b in kinds:
            r = by.get((a, b))
            if r is None:
                cells.append("")
            elif not r.get("connected"):
                cells.append("**not connected**")
            else:
                mark = "" if r["verdict"] == "ok" else " (!)"
                cells.append("%s, %s%s" % (r["class"], fmt_s(r["cold_s"]), mark))
        out.write("| %s | %s |\n" % (a.ljust(w), " | ".join(cells)))
    out.write("\n| A | B | connected | path | candidate pair (B's view) | cold open | ICE "
              "| QUIC handshake | warm open | expected | verdict |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|\n")
    for r in results:
        out.write("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" % (
            r["nat_a"], r["nat_b"], "yes" if r.get("connected") else "no", r.get("class", "-"),
            r.get("detail", ""), fmt_s(r.get("cold_s")), fmt_s(r.get("ice_s")),
            fmt_s(r.get("quic_s")), fmt_s(r.get("warm_s")),
            natlab.expected_class(r["nat_a"], r["nat_b"]), r["verdict"]))
    out.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=None, help="p2proxy binary (default: $P2PROXY_BIN, else "
                    "the newest build*/p2proxy)")
    ap.add_argument("--kinds", default=",".join(natlab.KINDS),
                    help="comma-separated NAT kinds (default: all four)")
    ap.add_argument("--unordered", action="store_true",
                    help="run each unordered pair once (10 instead of 16 for four kinds)")
    ap.add_argument("--json", help="also write the results as JSON here")
    ap.add_argument("--logs", help="write the logs of every pair that misses here")
    ap.add_argument("--log-level", default="debug", help="the nodes' [log] level (default debug)")
    a = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("nat_matrix: needs root (network namespaces)")
    missing = natlab.missing_tools()
    if missing:
        sys.exit("nat_matrix: missing %s (run deploy/install-deps.sh)" % " ".join(missing))
    binary = a.bin or natlab.find_binary()
    if not binary or not os.access(binary, os.X_OK):
        sys.exit("nat_matrix: no p2proxy binary (build it, or --bin / P2PROXY_BIN)")
    binary = os.path.abspath(binary)
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in natlab.KINDS]
    if bad:
        sys.exit("nat_matrix: unknown kind(s) %s (%s)" % (", ".join(bad), ", ".join(natlab.KINDS)))
    pairs = [(x, y) for i, x in enumerate(kinds) for j, y in enumerate(kinds)
             if not a.unordered or j >= i]

    # SIGTERM / SIGHUP unwind like Ctrl-C, so the running pair's lab is torn down
    def stop(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)

    print("nat_matrix: %s (%s)" % (binary, version(binary)))
    print("machine: %s" % machine())
    print("%d pairs: %s" % (len(pairs), ", ".join("%s x %s" % p for p in pairs)))
    results = []
    t0 = time.monotonic()
    base = "nm%d" % (os.getpid() % 10000)
    try:
        for i, (x, y) in enumerate(pairs):
            r = run_pair(binary, "%s-%d" % (base, i), x, y, a.logs, a.log_level)
            results.append(r)
            print("  %-11s x %-11s %-4s %-10s cold %-7s (ICE %-7s QUIC %-7s) warm %-7s %5.1fs  "
                  "%s%s" % (
                      x, y, "ok" if r.get("connected") else "FAIL", r.get("class", "-"),
                      fmt_s(r.get("cold_s")), fmt_s(r.get("ice_s")), fmt_s(r.get("quic_s")),
                      fmt_s(r.get("warm_s")), r["pair_s"], r["verdict"],
                ("  [%s]" % r["log"]) if r.get("log") else ""), flush=True)
    except KeyboardInterrupt:
        print("nat_matrix: interrupted; the running pair's lab was torn down", file=sys.stderr)
    print_tables(results, kinds)
    print("\n%d pairs in %.0f s; %d connected; %d as expected" % (
        len(results), time.monotonic() - t0, sum(1 for r in results if r.get("connected")),
        sum(1 for r in results if r["verdict"] == "ok")))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"binary": binary, "machine": machine(), "results": results}, f, indent=1,
                      default=str)
    ok = len(results) == len(pairs) and all(r["verdict"] == "ok" for r in results)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
