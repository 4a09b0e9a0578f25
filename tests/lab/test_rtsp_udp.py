"""RTSP clients that want UDP, through two NATs: node B (behind NAT B) has an rtsp listener,
node A (behind NAT A) exports a real RTSP server (tests/e2e/rtsp_server.py, gst-rtsp-server) in
hostA as cam1 (interleaved TCP to the camera) and cam2 (rtsp_transport = "udp"). Players in
hostB's namespace:

- ffmpeg -rtsp_transport udp and GStreamer's rtspsrc protocols=udp (UDP only) each decode
  >= 95 % of the frames of 10 s, without decoder errors;
- six ffmpeg UDP clients at once each get >= 95 %;
- afterwards no channel is left on either node.

Needs root (network namespaces), ffmpeg, python3-gi with gst-rtsp-server, rtspsrc and
avdec_h264; skips without them, fails under CI=true."""
import itertools
import json
import os
import subprocess
import sys
import time
import unittest

import natlab
from natlab import NatLab

_counter = itertools.count()

E2E = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e")
SERVER = os.path.join(E2E, "rtsp_server.py")
GST_PLAY = os.path.join(E2E, "gst_play.py")
SYS_PYTHON = "/usr/bin/python3"
CAMERA = ("127.0.0.1", 8554)       # in hostA
LISTEN = ("127.0.0.1", 9554)       # node B's rtsp listener, in hostB
SECONDS, FPS = 10, 15
MIN_FRAMES = int(SECONDS * FPS * 0.95)


def have_gst():
    r = subprocess.run(
        [SYS_PYTHON, "-c", "import gi; gi.require_version('Gst', '1.0'); "
         "gi.require_version('GstRtspServer', '1.0'); "
         "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
         "assert Gst.ElementFactory.find('rtspsrc'); "
         "assert Gst.ElementFactory.find('avdec_h264')"],
        capture_output=True, timeout=30)
    return r.returncode == 0


class RtspLab(NatLab):
    def up(self):
        self.lab("up", "--nat-a", self.nat_a, "--nat-b", self.nat_b)
        token = os.path.join(self.tmp, "network.token")
        self.token = "lab-token-%s" % self.prefix
        with open(token, "w") as f:
            f.write(self.token + "\n")
        os.chmod(token, 0o600)
        from natlab import SIGNAL_ADDR, SIGNAL_ADMIN
        self.lab("spawn", "pub", "signal", self.bin, "signal", "--listen", SIGNAL_ADDR,
                 "--key", os.path.join(self.tmp, "signal.key"),
                 "--admin", SIGNAL_ADMIN, "--token-file", token)
        self.wait("the signaling server", lambda: self.http(
            "pub", SIGNAL_ADMIN, "/v1/status", timeout=3)[0] == 200, 15)
        # One pipeline per client: each starts at a key frame.
        self.lab("spawn", "hostA", "camera", SYS_PYTHON, SERVER, str(CAMERA[1]),
                 "--per-client")
        probe = "import socket; socket.create_connection(('%s', %d), timeout=1)" % CAMERA
        self.wait("the camera", lambda: self.in_ns(
            "hostA", [SYS_PYTHON, "-c", probe], 10).returncode == 0, 20)
        self.start_node("A", """
[[export]]
name = "cam1"
target = "%s:%d"
protocol = "rtsp"
allow = ["*"]

[[export]]
name = "cam2"
target = "%s:%d"
protocol = "rtsp"
rtsp_transport = "udp"
allow = ["*"]
""" % (CAMERA + CAMERA))
        self.start_node("B", """
[[listen]]
bind = "%s:%d"
protocol = "rtsp"
""" % LISTEN)
        for n in ("A", "B"):
            self.wait_online(n)


class RtspUdpThroughNats(unittest.TestCase):
    def setUp(self):
        missing = () if have_gst() else ("python3-gi with gst-rtsp-server, rtspsrc, avdec_h264",)
        self.bin = natlab.require_lab(self, "lab RTSP UDP tests", ("ffmpeg",), missing)
        prefix = "tr%d-%d" % (os.getpid() % 100000, next(_counter))
        self.lab = RtspLab(self.bin, prefix, "eim", "eim")
        self.addCleanup(self.lab.down)
        self.t0 = time.monotonic()
        self.lab.up()

    def logs(self):
        try:
            return self.lab.logs()
        except Exception as e:  # diagnostics only
            return "(no logs: %s)" % e

    def url(self, cam):
        return "rtsp://%s:%d/%s/stream" % (LISTEN + (cam,))

    def ffmpeg(self, cam):
        return subprocess.Popen(
            ["ip", "netns", "exec", self.lab.ns("hostB"), "ffmpeg", "-hide_banner", "-nostdin",
             "-v", "error", "-rtsp_transport", "udp", "-buffer_size", "1048576",
             "-i", self.url(cam), "-t", str(SECONDS),
             "-f", "framemd5", "-"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def assert_frames(self, proc, what):
        out, err = proc.communicate(timeout=SECONDS + 60)
        frames = [ln for ln in out.splitlines() if ln and ln[0] != "#"]
        self.assertEqual(proc.returncode, 0, "%s: %s%s" % (what, err[-2000:], self.logs()))
        self.assertEqual(err.strip(), "", "%s: decoder errors" % what)
        self.assertGreaterEqual(len(frames), MIN_FRAMES, "%s: %d frames" % (what, len(frames)))

    def channels(self, host):
        return self.lab.status(host).get("channels", [])

    def test_udp_players_through_two_nats(self):
        # The first play also opens the session (ICE, QUIC) and finds the camera.
        self.assert_frames(self.ffmpeg("cam1"), "ffmpeg udp, camera tcp")
        r = self.lab.in_ns("hostB", [SYS_PYTHON, GST_PLAY, self.url("cam2"), str(SECONDS)],
                           SECONDS + 60)
        res = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else None
        self.assertIsNotNone(res, r.stderr[-2000:] + self.logs())
        self.assertEqual(res["errors"], [], res)
        self.assertGreaterEqual(res["frames"], MIN_FRAMES, res)
        procs = [self.ffmpeg("cam1" if i % 2 else "cam2") for i in range(6)]
        for i, p in enumerate(procs):
            self.assert_frames(p, "client %d of 6" % i)
        self.lab.wait("no channel left", lambda: not self.channels("hostA")
                      and not self.channels("hostB"), 15)
        sys.stderr.write("  [rtsp udp lab] %.1fs\n" % (time.monotonic() - self.t0))


if __name__ == "__main__":
    unittest.main()
