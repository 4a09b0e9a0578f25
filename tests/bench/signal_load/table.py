#!/usr/bin/env python3
"""Prints p2proxy_signal_load's JSON results (run.sh) as the Markdown table of
docs/benchmarks.md. Missing or unreadable files become a row saying so."""
import json
import sys


def fmt(v, spec="{:.0f}"):
    return "n/a" if v is None else spec.format(v)


def mb(b):
    return f"{b / 1e6:.0f}"


def main(paths):
    print("| run | nodes online (planned) | per server | login rate /s | login p50 / p99 ms"
          " | Signal round trip p50 / p99 ms | servers' RSS MB (idle) | RSS per 10 000 nodes MB, above idle"
          " | Redis used_memory MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    failover = None
    for path in paths:
        name = path.rsplit("/", 1)[-1].removesuffix(".json")
        try:
            with open(path, encoding="utf-8") as f:
                r = json.load(f)
        except (OSError, ValueError) as e:
            print(f"| {name} | no result ({e}) | | | | | | | |")
            continue
        held = r.get("online_held", 0)
        rss = r.get("rss_total_bytes", 0)
        idle = r.get("rss_idle_total_bytes", 0)
        per10k = (rss - idle) / held * 10000 if held else None
        where = "same server" if r.get("servers", 1) == 1 else "across servers"
        print(f"| {name} ({r['servers']} server{'s' if r['servers'] > 1 else ''}) "
              f"| {held} ({r['nodes']}) "
              f"| {' / '.join(str(n) for n in r.get('nodes_per_server', []))} "
              f"| {fmt(r.get('login_rate'))} (planned {fmt(r.get('login_rate_planned'))}) "
              f"| {fmt(r.get('login_p50_ms'), '{:.1f}')} / {fmt(r.get('login_p99_ms'), '{:.1f}')} "
              f"| {fmt(r.get('probe_p50_ms'), '{:.2f}')} / {fmt(r.get('probe_p99_ms'), '{:.2f}')}"
              f" ({where}; {r.get('probes_lost', 0)} of {r.get('probes_sent', 0)} lost) "
              f"| {' + '.join(mb(b) for b in r.get('rss_bytes', []))} ({mb(idle)} idle in all) "
              f"| {fmt(per10k / 1e6 if per10k else None)} "
              f"| {fmt(r.get('redis_used_memory', 0) / 1e6, '{:.1f}')} ({r.get('redis_keys', 0)} keys) |")
        if "failover_nodes" in r:
            failover = r
    if failover:
        r = failover
        print()
        print(f"Failover: server 0 of 3, holding {r['failover_nodes']} nodes, killed (SIGKILL): "
              f"{r['failover_recovered']} of them online on the other two after "
              f"{fmt(r.get('failover_seconds'), '{:.1f}')} s (p50 {fmt(r.get('failover_p50_seconds'), '{:.1f}')} s, "
              f"p99 {fmt(r.get('failover_p99_seconds'), '{:.1f}')} s); "
              f"{r.get('failover_attempts', 0)} reconnect attempts, at most "
              f"{r.get('failover_peak_attempts_per_s', 0)} in one second; per second after the kill "
              f"(attempts/online again): {r.get('failover_per_second', '')}. "
              f"Survivors' RSS after: {' + '.join(mb(b) for b in r.get('rss_after_failover_bytes', []))} MB.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
