#!/usr/bin/env python3
"""The near side of the latency benchmark (tests/bench/latency): the clients,
run in the lab's hostB. Standard library only. Each prints one JSON line.

    lat_client.py rr --to HOST:PORT [--count N] [--size 100] [--gap S]
        request/response rounds on one TCP connection (TCP_NODELAY): send
        SIZE bytes, read SIZE back, GAP s pause; every round trip in ms.
    lat_client.py bulk --to HOST:PORT [--seconds S]
        reads as fast as it can until SIGTERM or S s; bytes and seconds.
    lat_client.py stream --rtsp URL --transport tcp|udp --seconds S
    lat_client.py stream --udp HOST:PORT --seconds S
        plays the stream of lat_server.py (RTSP with interleaved TCP or UDP
        transport, or raw RTP over UDP after a hello a second) and reports
        frame delay (arrival of a frame's last packet minus the time in its
        header, CLOCK_MONOTONIC) and frames lost, whole run and first/last
        window. An RTSP 461 answer to the SETUP gives {"supported": false}.
"""
import argparse
import json
import os
import re
import select
import signal
import socket
import statistics
import struct
import sys
import time

HEADER = struct.Struct(">4sIQ")
WARMUP = 2.0          # s of stream ignored after PLAY
GRACE = 1.0           # s: frames made this close to the end are not judged
KEEPALIVE = 15.0      # s between GET_PARAMETERs on the RTSP connection


def hp(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100.0 * (len(xs) - 1))))]


def out(res):
    print(json.dumps(res), flush=True)


# --- request/response ------------------------------------------------------------------------
def cmd_rr(a):
    s = socket.create_connection(hp(a.to), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(10)
    msg = os.urandom(a.size)
    rtts = []
    errors = 0
    deadline = time.monotonic() + a.max_seconds
    try:
        for _ in range(a.count):
            if time.monotonic() > deadline:
                break
            t0 = time.monotonic()
            s.sendall(msg)
            got = b""
            while len(got) < a.size:
                d = s.recv(a.size - len(got))
                if not d:
                    raise OSError("connection closed")
                got += d
            rtts.append((time.monotonic() - t0) * 1e3)
            if got != msg:
                errors += 1
            time.sleep(a.gap)
    except OSError as e:
        out({"error": str(e), "rtt_ms": rtts})
        return
    finally:
        s.close()
    out({"rtt_ms": [round(x, 3) for x in rtts], "corrupt": errors})


# --- bulk ------------------------------------------------------------------------------------
def cmd_bulk(a):
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    s = socket.create_connection(hp(a.to), timeout=30)
    s.settimeout(0.5)
    buf = bytearray(1 << 16)
    n = 0
    t0 = time.monotonic()
    end = t0 + a.seconds
    err = ""
    while not stop[0] and time.monotonic() < end:
        try:
            k = s.recv_into(buf)
        except socket.timeout:
            continue
        except OSError as e:
            err = str(e)
            break
        if k == 0:
            err = "closed"
            break
        n += k
    dt = time.monotonic() - t0
    s.close()
    out({"bytes": n, "seconds": round(dt, 3), "mbit_s": round(n * 8 / dt / 1e6, 2), "error": err})


# --- stream ----------------------------------------------------------------------------------
class Rtp:
    """Collects RTP packets: (arrival ns, seq, ts, marker, frame header or None)."""

    def __init__(self):
        self.pkts = []

    def add(self, data, now):
        if len(data) < 14 or (data[0] >> 6) != 2:
            return
        cc = data[0] & 0x0F
        ext = data[0] & 0x10
        marker = data[1] >> 7
        seq, ts = struct.unpack(">HI", data[2:8])
        off = 12 + 4 * cc
        if ext and len(data) >= off + 4:
            off += 4 + 4 * struct.unpack(">H", data[off + 2:off + 4])[0]
        # RFC 4175: 2 bytes extended sequence number, then 6-byte line headers
        # (length, F|line, C|offset) while C is set, then the data
        off += 2
        first = None
        line_off = None
        while off + 6 <= len(data):
            _, line, offs = struct.unpack(">HHH", data[off:off + 6])
            if line_off is None:
                line_off = ((line & 0x7FFF), offs & 0x7FFF)
            off += 6
            if not offs & 0x8000:
                break
        if line_off == (0, 0) and off + HEADER.size <= len(data):
            magic, n, t = HEADER.unpack(data[off:off + HEADER.size])
            if magic == b"LATF":
                first = (n, t)
        self.pkts.append((now, seq, ts, marker, first))


def analyse(pkts, t_play, t_end, fps, window):
    """Frames from the packets: per RTP timestamp, complete when it has the usual number of
    packets. Delay = last packet's arrival - the frame's header time. Frames lost: in the
    judged span (WARMUP after PLAY to GRACE before the end), frames not complete."""
    frames = {}
    for now, seq, ts, marker, first in pkts:
        f = frames.setdefault(ts, {"n": 0, "last": 0, "hdr": None, "marker": False})
        f["n"] += 1
        f["last"] = max(f["last"], now)
        f["marker"] |= bool(marker)
        if first:
            f["hdr"] = first
    if not frames:
        return {"frames_received": 0, "error": "no RTP packet arrived"}
    counts = [f["n"] for f in frames.values() if f["marker"]]
    full = statistics.mode(counts) if counts else 0
    # frame number -> (made ns, delay ms) for complete frames
    made = {}
    for f in frames.values():
        if f["hdr"] and f["n"] == full and f["marker"]:
            n, t = f["hdr"]
            made[n] = (t, (f["last"] - t) / 1e6)
    if not made:
        return {"frames_received": 0, "error": "no complete frame (packets per frame %s)" % full}
    period = 1e9 / fps
    # the frame numbers' clock: made(n) ~ base + n * period (median over complete frames)
    base = statistics.median(t - n * period for n, (t, _) in made.items())
    lo = int((t_play + WARMUP * 1e9 - base) / period) + 1
    hi = int((t_end - GRACE * 1e9 - base) / period)
    if hi <= lo:
        return {"error": "run too short"}

    def stats(a, b):
        judged = [made[n][1] for n in range(a, b + 1) if n in made]
        expected = b - a + 1
        return {"frames": expected, "complete": len(judged),
                "lost_pct": round(100.0 * (expected - len(judged)) / expected, 2),
                "p50_ms": pct(judged, 50), "p99_ms": pct(judged, 99),
                "max_ms": max(judged) if judged else None}
    # packets lost (RTP sequence numbers, unwrapped) after the warm-up
    seqs, ext = set(), None
    for now, seq, _, _, _ in pkts:
        if now < t_play + WARMUP * 1e9:
            continue
        ext = seq if ext is None else ext + ((seq - (ext & 0xFFFF) + 32768) % 65536 - 32768)
        seqs.add(ext)
    pkt_lost = round(100.0 * (1 - len(seqs) / (max(seqs) - min(seqs) + 1)), 2) if seqs else None
    w = int(window * fps)
    res = {"all": stats(lo, hi), "packets_per_frame": full,
           "first": stats(lo, min(hi, lo + w - 1)), "last": stats(max(lo, hi - w + 1), hi),
           "window_s": window, "packets": len(pkts), "packets_lost_pct": pkt_lost}
    last_n = max(made)
    res["behind_at_end_ms"] = round((t_end - (base + last_n * period)) / 1e6, 1)
    return res


class Rtsp:
    def __init__(self, url, timeout=20):
        m = re.match(r"rtsp://([^/:]+):(\d+)(/.*)?$", url)
        if not m:
            raise SystemExit("bad URL %s" % url)
        self.url = url
        self.sock = socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.cseq = 0
        self.buf = b""
        self.session = None

    def send(self, method, url, headers=()):
        self.cseq += 1
        h = ["%s %s RTSP/1.0" % (method, url), "CSeq: %d" % self.cseq,
             "User-Agent: p2proxy-latency-bench"]
        if self.session:
            h.append("Session: %s" % self.session)
        h.extend(headers)
        self.sock.sendall(("\r\n".join(h) + "\r\n\r\n").encode())

    def fill(self):
        d = self.sock.recv(1 << 16)
        if not d:
            raise OSError("RTSP connection closed")
        self.buf += d

    def take(self):
        """One item from the buffer: ("rtp", channel, bytes), ("reply", code, headers, body),
        or None if incomplete."""
        b = self.buf
        if not b:
            return None
        if b[:1] == b"$":
            if len(b) < 4:
                return None
            ch, ln = b[1], struct.unpack(">H", b[2:4])[0]
            if len(b) < 4 + ln:
                return None
            self.buf = b[4 + ln:]
            return ("rtp", ch, b[4:4 + ln])
        end = b.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = b[:end].decode(errors="replace").split("\r\n")
        hdrs = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        cl = int(hdrs.get("content-length", "0"))
        if len(b) < end + 4 + cl:
            return None
        body = b[end + 4:end + 4 + cl]
        self.buf = b[end + 4 + cl:]
        parts = head[0].split(" ", 2)
        code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        return ("reply", code, hdrs, body)

    def request(self, method, url, headers=()):
        self.send(method, url, headers)
        while True:
            item = self.take()
            if item is None:
                self.fill()
                continue
            if item[0] == "reply":
                return item[1], item[2], item[3]


def cmd_stream(a):
    rtp = Rtp()
    res = {"supported": True}
    rtsp = None
    usock = None
    t_end = None
    if a.rtsp:
        rtsp = Rtsp(a.rtsp)
        code, hdrs, body = rtsp.request("DESCRIBE", a.rtsp, ["Accept: application/sdp"])
        if code != 200:
            out({"error": "DESCRIBE answered %d" % code})
            return
        base = hdrs.get("content-base", a.rtsp)
        ctl = None
        for line in body.decode(errors="replace").splitlines():
            if line.startswith("m="):
                ctl = ""
            elif line.startswith("a=control:") and ctl == "":
                ctl = line[len("a=control:"):].strip()
        track = ctl if ctl and ctl.startswith("rtsp://") else \
            base.rstrip("/") + "/" + (ctl or "")
        if a.transport == "tcp":
            tr = "RTP/AVP/TCP;unicast;interleaved=0-1"
        else:
            usock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            usock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            for port in range(50000, 50400, 2):
                try:
                    usock.bind(("0.0.0.0", port))
                    break
                except OSError:
                    continue
            port = usock.getsockname()[1]
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind(("0.0.0.0", port + 1))
            except OSError:
                pass
            tr = "RTP/AVP;unicast;client_port=%d-%d" % (port, port + 1)
        code, hdrs, _ = rtsp.request("SETUP", track, ["Transport: " + tr])
        if code == 461:
            out({"supported": False, "answer": "461 Unsupported Transport"})
            return
        if code != 200:
            out({"error": "SETUP answered %d" % code})
            return
        rtsp.session = hdrs.get("session", "").split(";")[0]
        res["transport"] = hdrs.get("transport", "")
        code, _, _ = rtsp.request("PLAY", base, ["Range: npt=0.000-"])
        if code != 200:
            out({"error": "PLAY answered %d" % code})
            return
    else:
        usock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        usock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        usock.connect(hp(a.udp))
        usock.send(b"hello")
    t_play = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    t_stop = time.monotonic() + a.seconds
    next_hello = time.monotonic() + 1.0
    next_keep = time.monotonic() + KEEPALIVE
    socks = [s for s in (rtsp.sock if rtsp else None, usock) if s]
    for s in socks:
        s.setblocking(False)
    try:
        while time.monotonic() < t_stop:
            r, _, _ = select.select(socks, [], [], 0.2)
            now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            if usock in r:
                for _ in range(256):
                    try:
                        d = usock.recv(65536)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    rtp.add(d, now)
            if rtsp and rtsp.sock in r:
                try:
                    rtsp.fill()
                except BlockingIOError:
                    pass
                while True:
                    item = rtsp.take()
                    if item is None:
                        break
                    if item[0] == "rtp" and item[1] == 0:
                        rtp.add(item[2], now)
            mono = time.monotonic()
            if not rtsp and mono > next_hello:
                usock.send(b"hello")
                next_hello = mono + 1.0
            if rtsp and mono > next_keep:
                rtsp.send("GET_PARAMETER", rtsp.url)
                next_keep = mono + KEEPALIVE
        t_end = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        if rtsp:
            try:
                rtsp.send("TEARDOWN", rtsp.url)
            except OSError:
                pass
    except OSError as e:
        res["error"] = "stream: %s" % e
        t_end = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    res.update(analyse(rtp.pkts, t_play, t_end, a.fps, a.window))
    out(res)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("rr")
    s.add_argument("--to", required=True)
    s.add_argument("--count", type=int, default=500)
    s.add_argument("--size", type=int, default=100)
    s.add_argument("--gap", type=float, default=0.01)
    s.add_argument("--max-seconds", type=float, default=300)
    s = sub.add_parser("bulk")
    s.add_argument("--to", required=True)
    s.add_argument("--seconds", type=float, default=300)
    s = sub.add_parser("stream")
    s.add_argument("--rtsp")
    s.add_argument("--udp")
    s.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    s.add_argument("--seconds", type=float, default=60)
    s.add_argument("--fps", type=int, default=25)
    s.add_argument("--window", type=float, default=20)
    a = p.parse_args()
    if a.cmd == "stream" and bool(a.rtsp) == bool(a.udp):
        p.error("stream: one of --rtsp and --udp")
    try:
        {"rr": cmd_rr, "bulk": cmd_bulk, "stream": cmd_stream}[a.cmd](a)
    except OSError as e:      # a refused or silent connection: say so, the run goes on
        out({"error": "%s: %s" % (type(e).__name__, e)})


if __name__ == "__main__":
    sys.exit(main())
