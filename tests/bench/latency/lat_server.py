#!/usr/bin/python3
"""The far side of the latency benchmark (tests/bench/latency): every server
it needs in one process, run in the lab's hostA with Debian's /usr/bin/python3
(it has `gi`).

    lat_server.py --echo PORT --bulk PORT --rtsp PORT --udp PORT [--fps 25]
                  [--size 200x100] [--mtu 1100] [--duration S]

- echo (TCP): sends back every byte it reads (TCP_NODELAY), for the
  request/response rounds;
- bulk (TCP): sends data without end from the accept on, for the bulk
  transfer that runs beside them;
- rtsp (TCP): gst-rtsp-server, rtsp://HOST:PORT/stream, one H.264-free raw
  video track (RFC 4175, rtpvrawpay, UYVY, default 200x100 at 25 fps:
  40 000 bytes a frame, 8 Mbit/s), one pipeline per client;
- udp: the same RTP packets sent to every address that sent this port a
  datagram in the last 5 s (the client says hello once a second).

Every frame starts with a 16-byte header: b"LATF", the frame number (u32)
and CLOCK_MONOTONIC in ns (u64) when the frame was made. Network namespaces
share that clock, so a client in another namespace computes each frame's
delay from it. Prints "ready" once everything listens; runs until SIGTERM or
--duration.
"""
import argparse
import signal
import socket
import struct
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

MAGIC = b"LATF"
HEADER = struct.Struct(">4sIQ")
SUBSCRIBER_TTL = 5.0


def caps(a):
    w, h = a.size
    return "video/x-raw,format=UYVY,width=%d,height=%d,framerate=%d/1" % (w, h, a.fps)


def appsrc(a, name="src"):
    # live, time-stamped on push; at most 2 frames queued, the oldest dropped
    # (before PLAY nobody reads: no stale frames may be waiting then)
    return ("appsrc name=%s is-live=true format=time do-timestamp=true max-buffers=2 "
            "leaky-type=downstream caps=%s" % (name, caps(a)))


class Frames:
    """Makes a frame every 1/fps s (on an absolute schedule) and pushes it to every
    registered appsrc."""

    def __init__(self, a):
        self.a = a
        self.size = a.size[0] * a.size[1] * 2
        self.fill = bytes(range(256)) * (self.size // 256 + 1)
        self.lock = threading.Lock()
        self.srcs = set()
        self.stop = threading.Event()

    def add(self, src):
        with self.lock:
            self.srcs.add(src)

    def remove(self, src):
        with self.lock:
            self.srcs.discard(src)

    def run(self):
        period = 1.0 / self.a.fps
        n = 0
        t0 = time.monotonic()
        while not self.stop.is_set():
            n += 1
            t = t0 + n * period
            d = t - time.monotonic()
            if d > 0:
                time.sleep(d)
            data = HEADER.pack(MAGIC, n, time.clock_gettime_ns(time.CLOCK_MONOTONIC))
            data += self.fill[:self.size - len(data)]
            with self.lock:
                srcs = list(self.srcs)
            for s in srcs:
                s.emit("push-buffer", Gst.Buffer.new_wrapped(data))


def tcp_listener(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(64)
    return s


def serve_tcp(ls, handler):
    def loop():
        while True:
            c, _ = ls.accept()
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=handler, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


def echo(c):
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    finally:
        c.close()


def bulk(c):
    chunk = bytes(64 * 1024)
    try:
        while True:
            c.sendall(chunk)
    except OSError:
        pass
    finally:
        c.close()


class UdpStream:
    """RTP to every recent hello sender, from the port the hellos came to."""

    def __init__(self, a, frames):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        self.sock.bind(("0.0.0.0", a.udp))
        self.subs = {}
        self.lock = threading.Lock()
        self.pipe = Gst.parse_launch(
            "%s ! rtpvrawpay mtu=%d pt=96 ! appsink name=out emit-signals=true sync=false "
            "max-buffers=64 drop=true" % (appsrc(a), a.mtu))
        self.pipe.get_by_name("out").connect("new-sample", self.on_sample)
        frames.add(self.pipe.get_by_name("src"))
        self.pipe.set_state(Gst.State.PLAYING)
        threading.Thread(target=self.hellos, daemon=True).start()

    def hellos(self):
        while True:
            _, addr = self.sock.recvfrom(2048)
            with self.lock:
                self.subs[addr] = time.monotonic()

    def on_sample(self, sink):
        sample = sink.emit("pull-sample")
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        if not ok:
            return Gst.FlowReturn.OK
        data = bytes(info.data)
        buf.unmap(info)
        now = time.monotonic()
        with self.lock:
            for addr, seen in list(self.subs.items()):
                if now - seen > SUBSCRIBER_TTL:
                    del self.subs[addr]
                    continue
                try:
                    self.sock.sendto(data, addr)
                except OSError:
                    pass
        return Gst.FlowReturn.OK


def rtsp_server(a, frames):
    server = GstRtspServer.RTSPServer()
    server.set_address("0.0.0.0")
    server.set_service(str(a.rtsp))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch("( %s ! rtpvrawpay name=pay0 pt=96 mtu=%d )" % (appsrc(a), a.mtu))
    factory.set_shared(False)

    def configure(_factory, media):
        src = media.get_element().get_by_name("src")
        frames.add(src)
        media.connect("unprepared", lambda *_: frames.remove(src))
    factory.connect("media-configure", configure)
    server.get_mount_points().add_factory("/stream", factory)
    if server.attach(None) == 0:
        raise SystemExit("lat_server: cannot listen on RTSP port %d" % a.rtsp)
    return server


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--echo", type=int, required=True)
    p.add_argument("--bulk", type=int, required=True)
    p.add_argument("--rtsp", type=int, required=True)
    p.add_argument("--udp", type=int, required=True)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--size", default="200x100")
    p.add_argument("--mtu", type=int, default=1100)
    p.add_argument("--duration", type=float, default=3600)
    a = p.parse_args()
    a.size = tuple(int(x) for x in a.size.split("x"))
    Gst.init(None)
    frames = Frames(a)
    serve_tcp(tcp_listener(a.echo), echo)
    serve_tcp(tcp_listener(a.bulk), bulk)
    keep = [UdpStream(a, frames), rtsp_server(a, frames)]
    threading.Thread(target=frames.run, daemon=True).start()
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    GLib.timeout_add(int(a.duration * 1000), loop.quit)
    print("ready", flush=True)
    loop.run()
    frames.stop.set()
    del keep


if __name__ == "__main__":
    main()
