#!/usr/bin/env python3
"""Small network probes for the lab tests, run inside namespaces with `ip netns exec NS python3
netprobe.py CMD ...`. Standard library only. Every command is bounded in time and prints one JSON
object on stdout.

  serve   --udp IP:PORT... --tcp IP:PORT... --duration S
          UDP "PING..." -> reply b"SRC ip:port|" + payload; UDP "SINK <seq>" -> counted, no reply;
          TCP -> echo. Prints {"sink": distinct seqs, "sources": [...]} on exit (SIGTERM or duration).
  udp-map --bind PORT --to IP:PORT... [--timeout S]
          from ONE local port, PING each destination; print the source each one saw.
  listen  --bind PORT --timeout S                  count UDP datagrams received.
  probe   --bind IP:PORT --to IP:PORT --count N --echo-for S
          send N datagrams (unsolicited probes), then answer PINGs like serve for S seconds.
  sink-send --to IP:PORT --count N                 send N "SINK <seq>" datagrams, paced.
  rtt     --to IP:PORT --count N [--timeout S]     UDP echo round trips; median/min in ms.
  stun    --to IP:PORT [--bind PORT] [--timeout S] STUN Binding; print XOR-MAPPED-ADDRESS.
  tcp     --to IP:PORT [--timeout S]               connect, echo a line.
"""
import argparse
import json
import os
import select
import signal
import socket
import statistics
import struct
import sys
import time


def hp(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def cmd_serve(a):
    deadline = time.monotonic() + a.duration
    udp, tcp_l, conns = [], [], []
    for s in a.udp or []:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        u.bind(hp(s))
        udp.append(u)
    for s in a.tcp or []:
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind(hp(s))
        t.listen(16)
        tcp_l.append(t)
    seqs, sources = set(), []
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    out({"ready": True})
    while not stop[0] and time.monotonic() < deadline:
        try:
            r, _, _ = select.select(udp + tcp_l + conns, [], [], 0.1)
        except InterruptedError:
            continue
        for s in r:
            if s in udp:
                for _ in range(256):  # drain, bounded
                    try:
                        data, src = s.recvfrom(65535, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    if data.startswith(b"SINK "):
                        seqs.add(data[5:].split(b" ", 1)[0])
                    elif data.startswith(b"PING"):
                        sources.append("%s:%d" % src)
                        s.sendto(b"SRC %s:%d|" % (src[0].encode(), src[1]) + data, src)
            elif s in tcp_l:
                c, _ = s.accept()
                c.setblocking(False)
                conns.append(c)
            else:
                try:
                    data = s.recv(65536)
                except (BlockingIOError, ConnectionError):
                    data = b""
                if data:
                    try:
                        s.sendall(data)
                    except OSError:
                        pass
                else:
                    conns.remove(s)
                    s.close()
    out({"sink": len(seqs), "sources": sources})


def recv_reply(sock, timeout):
    sock.settimeout(timeout)
    try:
        data, _ = sock.recvfrom(65535)
    except socket.timeout:
        return None
    return data


def parse_src(data):
    if not data or not data.startswith(b"SRC "):
        return None
    return data[4:].split(b"|", 1)[0].decode()


def cmd_udp_map(a):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", a.bind))
    seen = {}
    for dst in a.to:
        target = hp(dst)
        for attempt in range(5):
            u.sendto(b"PING map %d" % attempt, target)
            end = time.monotonic() + a.timeout / 5
            got = None
            while time.monotonic() < end and got is None:
                data = recv_reply(u, max(0.01, end - time.monotonic()))
                if data is None:
                    break
                got = parse_src(data)
            if got:
                seen[dst] = got
                break
    out({"local_port": u.getsockname()[1], "seen": seen})


def cmd_listen(a):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", a.bind))
    out({"ready": True})
    n, froms = 0, []
    end = time.monotonic() + a.timeout
    while time.monotonic() < end:
        r, _, _ = select.select([u], [], [], max(0.0, end - time.monotonic()))
        if r:
            _, src = u.recvfrom(65535)
            n += 1
            froms.append("%s:%d" % src)
    out({"received": n, "from": froms})


def cmd_probe(a):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(hp(a.bind))
    for i in range(a.count):
        u.sendto(b"PROBE %d" % i, hp(a.to))
        time.sleep(0.05)
    out({"ready": True})
    sources = []
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    end = time.monotonic() + a.echo_for
    while not stop[0] and time.monotonic() < end:
        try:
            r, _, _ = select.select([u], [], [], 0.1)
        except InterruptedError:
            continue
        if r:
            data, src = u.recvfrom(65535)
            if data.startswith(b"PING"):
                sources.append("%s:%d" % src)
                u.sendto(b"SRC %s:%d|" % (src[0].encode(), src[1]) + data, src)
    out({"sources": sources})


def cmd_sink_send(a):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = hp(a.to)
    for i in range(a.count):
        u.sendto(b"SINK %d " % i + b"x" * 64, target)
        if i % 20 == 19:
            time.sleep(0.002)  # pace: never overflow a queue, so only the impairment drops
    out({"sent": a.count})


def cmd_rtt(a):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target = hp(a.to)
    rtts = []
    for i in range(a.count):
        tag = b"PING rtt %d %d" % (os.getpid(), i)
        t0 = time.monotonic()
        u.sendto(tag, target)
        end = t0 + a.timeout
        while time.monotonic() < end:
            data = recv_reply(u, max(0.001, end - time.monotonic()))
            if data is None:
                break
            if data.endswith(tag):
                rtts.append((time.monotonic() - t0) * 1000.0)
                break
        time.sleep(0.01)
    res = {"count": a.count, "answered": len(rtts)}
    if rtts:
        res.update(median_ms=statistics.median(rtts), min_ms=min(rtts), max_ms=max(rtts))
    out(res)


def cmd_stun(a):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", a.bind))
    txid = os.urandom(12)
    # STUN header: type 0x0001 (Binding request), length 0, magic cookie, transaction id
    req = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + txid
    res = {"answered": False}
    for _ in range(4):
        u.sendto(req, hp(a.to))
        data = recv_reply(u, a.timeout / 4)
        if data is None or len(data) < 20:
            continue
        mtype, mlen, cookie = struct.unpack("!HHI", data[:8])
        if data[8:20] != txid:
            continue
        res = {"answered": True, "type": mtype, "cookie_ok": cookie == 0x2112A442}
        pos, end = 20, 20 + mlen
        while pos + 4 <= end and pos + 4 <= len(data):
            atype, alen = struct.unpack("!HH", data[pos:pos + 4])
            val = data[pos + 4:pos + 4 + alen]
            if atype == 0x0020 and alen >= 8 and val[1] == 0x01:  # XOR-MAPPED-ADDRESS, IPv4
                port = struct.unpack("!H", val[2:4])[0] ^ 0x2112
                ip = struct.unpack("!I", val[4:8])[0] ^ 0x2112A442
                res["xor_mapped"] = "%s:%d" % (socket.inet_ntoa(struct.pack("!I", ip)), port)
            elif atype == 0x0001 and alen >= 8 and val[1] == 0x01:  # MAPPED-ADDRESS
                res["mapped"] = "%s:%d" % (socket.inet_ntoa(val[4:8]),
                                           struct.unpack("!H", val[2:4])[0])
            pos += 4 + alen + ((4 - alen % 4) % 4)
        break
    out(res)


def cmd_tcp(a):
    res = {"ok": False}
    try:
        with socket.create_connection(hp(a.to), timeout=a.timeout) as c:
            c.settimeout(a.timeout)
            c.sendall(b"hello lab\n")
            data = b""
            end = time.monotonic() + a.timeout
            while len(data) < 10 and time.monotonic() < end:
                chunk = c.recv(64)
                if not chunk:
                    break
                data += chunk
            res = {"ok": data == b"hello lab\n", "echo": data.decode(errors="replace")}
    except OSError as e:
        res["error"] = str(e)
    out(res)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--udp", action="append")
    s.add_argument("--tcp", action="append")
    s.add_argument("--duration", type=float, default=60)
    s = sub.add_parser("udp-map")
    s.add_argument("--bind", type=int, default=0)
    s.add_argument("--to", action="append", required=True)
    s.add_argument("--timeout", type=float, default=5)
    s = sub.add_parser("listen")
    s.add_argument("--bind", type=int, required=True)
    s.add_argument("--timeout", type=float, default=2)
    s = sub.add_parser("probe")
    s.add_argument("--bind", required=True)
    s.add_argument("--to", required=True)
    s.add_argument("--count", type=int, default=3)
    s.add_argument("--echo-for", type=float, default=10)
    s = sub.add_parser("sink-send")
    s.add_argument("--to", required=True)
    s.add_argument("--count", type=int, default=2000)
    s = sub.add_parser("rtt")
    s.add_argument("--to", required=True)
    s.add_argument("--count", type=int, default=20)
    s.add_argument("--timeout", type=float, default=1)
    s = sub.add_parser("stun")
    s.add_argument("--to", required=True)
    s.add_argument("--bind", type=int, default=0)
    s.add_argument("--timeout", type=float, default=4)
    s = sub.add_parser("tcp")
    s.add_argument("--to", required=True)
    s.add_argument("--timeout", type=float, default=3)
    a = p.parse_args()
    {"serve": cmd_serve, "udp-map": cmd_udp_map, "listen": cmd_listen, "probe": cmd_probe,
     "sink-send": cmd_sink_send, "rtt": cmd_rtt, "stun": cmd_stun, "tcp": cmd_tcp}[a.cmd](a)


if __name__ == "__main__":
    main()
