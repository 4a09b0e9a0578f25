#!/usr/bin/env python3
"""The two ends of a checked bulk transfer for tests/lab/test_stalls.py, run inside the lab's
namespaces. Standard library only.

  stallprobe.py serve --bind IP:PORT --bytes N --rate BYTES_PER_S --seed S --duration SECS
      Accepts connections for at most SECS seconds; to each it sends N pseudo-random bytes
      (random.Random(S), 64 KiB at a time) at about BYTES_PER_S (0: as fast as it can), then
      closes it (FIN). Prints "ready" once listening.
  stallprobe.py fetch --to IP:PORT --timeout SECS [--progress FILE]
      Connects, reads until the end, and prints one JSON line: bytes, sha256, end ("eof",
      "reset", "error: ...", "timeout"), seconds, and end_monotonic (CLOCK_MONOTONIC, the
      same clock in every namespace). With --progress it rewrites FILE with the byte count
      about ten times a second, so a test knows the transfer is under way.

expected(N, S) is the SHA-256 hex digest a complete transfer has.
"""
import argparse
import hashlib
import json
import os
import random
import socket
import sys
import threading
import time

CHUNK = 64 * 1024


def chunks(nbytes, seed):
    rng = random.Random(seed)
    left = nbytes
    while left > 0:
        n = min(CHUNK, left)
        yield rng.randbytes(n)
        left -= n


def expected(nbytes, seed):
    h = hashlib.sha256()
    for c in chunks(nbytes, seed):
        h.update(c)
    return h.hexdigest()


def hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def cmd_serve(a):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(hostport(a.bind))
    srv.listen(16)
    srv.settimeout(0.5)
    print("ready", flush=True)

    def serve(c):
        try:
            t0 = time.monotonic()
            sent = 0
            for data in chunks(a.bytes, a.seed):
                c.sendall(data)
                sent += len(data)
                if a.rate > 0:
                    ahead = sent / a.rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
            c.shutdown(socket.SHUT_WR)
            c.settimeout(30)
            while c.recv(65536):   # until the other side closes
                pass
            print("served %d bytes" % sent, flush=True)
        except OSError as e:
            print("connection ended: %s" % e, flush=True)
        finally:
            c.close()

    deadline = time.monotonic() + a.duration
    while time.monotonic() < deadline:
        try:
            c, _ = srv.accept()
        except socket.timeout:
            continue
        threading.Thread(target=serve, args=(c,), daemon=True).start()
    srv.close()


def cmd_fetch(a):
    t0 = time.monotonic()
    h = hashlib.sha256()
    got = 0
    end = "eof"
    last_progress = 0.0

    def progress():
        if a.progress:
            tmp = a.progress + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(got))
            os.replace(tmp, a.progress)
    try:
        c = socket.create_connection(hostport(a.to), timeout=10)
        c.settimeout(1.0)
        while True:
            if time.monotonic() - t0 > a.timeout:
                end = "timeout"
                break
            try:
                data = c.recv(256 * 1024)
            except socket.timeout:
                continue
            if not data:
                break
            h.update(data)
            got += len(data)
            now = time.monotonic()
            if now - last_progress >= 0.1:
                last_progress = now
                progress()
        c.close()
    except ConnectionResetError:
        end = "reset"
    except OSError as e:
        end = "error: %s" % e
    progress()
    print(json.dumps({"bytes": got, "sha256": h.hexdigest(), "end": end,
                      "seconds": round(time.monotonic() - t0, 3),
                      "end_monotonic": time.monotonic()}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--bind", required=True)
    s.add_argument("--bytes", type=int, required=True)
    s.add_argument("--rate", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--duration", type=float, default=600.0)
    f = sub.add_parser("fetch")
    f.add_argument("--to", required=True)
    f.add_argument("--timeout", type=float, default=120.0)
    f.add_argument("--progress", default="")
    a = p.parse_args()
    {"serve": cmd_serve, "fetch": cmd_fetch}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
