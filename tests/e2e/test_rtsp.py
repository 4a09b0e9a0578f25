"""The RTSP listener end to end: ffprobe / ffmpeg -> rtsp listener on node B
(the resource is the URL's first path segment) -> session -> export "cam1"
(protocol rtsp) on node A -> a real RTSP server (GStreamer's gst-rtsp-server,
tests/e2e/rtsp_server.py). The exporting node rewrites URLs both ways; a
client that wants UDP gets it (test_rtsp_udp.py), a multicast-only SETUP is
answered 461.

Needs /usr/bin/python3 with `gi` (python3-gi, gir1.2-gst-rtsp-server-1.0,
gstreamer1.0-plugins-{base,good,ugly}) and ffmpeg (deploy/install-deps.sh)."""
import json
import os
import re
import shutil
import socket
import subprocess
import time
import unittest

from harness import Lab, free_port, online, wait_until

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "rtsp_server.py")
SYS_PYTHON = "/usr/bin/python3"


def have_gst_rtsp():
    if not os.path.exists(SYS_PYTHON):
        return False
    r = subprocess.run(
        [SYS_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', "
         "'1.0'); from gi.repository import GstRtspServer"],
        capture_output=True, timeout=30)
    return r.returncode == 0


def ffprobe(url, tcp=True, timeout=30, loglevel="error"):
    args = ["ffprobe", "-v", loglevel]
    if tcp:
        args += ["-rtsp_transport", "tcp"]
    args += ["-show_streams", "-of", "json", url]
    return subprocess.run(args, capture_output=True, text=True,
                          timeout=timeout)


def rtsp_request(port, text, timeout=10):
    """Sends one RTSP request; returns the response head (and body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(text.encode())
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace")


@unittest.skipUnless(shutil.which("ffprobe") and shutil.which("ffmpeg"),
                     "needs ffmpeg (deploy/install-deps.sh)")
class Rtsp(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not have_gst_rtsp():
            raise unittest.SkipTest("needs /usr/bin/python3 with gi and "
                                    "gst-rtsp-server (deploy/install-deps.sh)")
        cls.lab = Lab()
        cls.server = None
        try:
            cls.rtsp_port = free_port()
            cls.server_log = open(os.path.join(cls.lab.dir, "rtsp_server.log"),
                                  "w+")
            cls.server = subprocess.Popen(
                [SYS_PYTHON, SERVER, str(cls.rtsp_port)],
                stdout=subprocess.PIPE, stderr=cls.server_log, text=True)
            # "ready" once it listens (bounded: poll the socket as well).
            wait_until(lambda: socket.create_connection(
                ("127.0.0.1", cls.rtsp_port), timeout=1).close() or True,
                20, "the RTSP server")
            cls.lab.start_server()
            exports = (f'[[export]]\nname = "cam1"\n'
                       f'target = "127.0.0.1:{cls.rtsp_port}"\n'
                       f'protocol = "rtsp"\nallow = ["*"]\n')
            cls.a, cls.a_admin = cls.lab.node("node-a", extra=exports)
            cls.lport = free_port()
            listens = (f'[[listen]]\nbind = "127.0.0.1:{cls.lport}"\n'
                       f'protocol = "rtsp"\n')
            cls.b, cls.b_admin = cls.lab.node("node-b", extra=listens)
            wait_until(lambda: online(cls.a_admin), 10, "node A online")
            wait_until(lambda: online(cls.b_admin), 10, "node B online")
            wait_until(lambda: socket.create_connection(
                ("127.0.0.1", cls.lport), timeout=1).close() or True,
                10, "node B's rtsp listener")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.kill()
            cls.server.wait(timeout=10)
            cls.server.stdout.close()
            cls.server_log.close()
            cls.server = None
        cls.lab.close()

    def url(self, path="cam1/stream"):
        return f"rtsp://127.0.0.1:{self.lport}/{path}"

    def assert_h264_320x240(self, r):
        self.assertEqual(r.returncode, 0, r.stderr)
        streams = json.loads(r.stdout)["streams"]
        video = [s for s in streams if s.get("codec_type") == "video"]
        self.assertEqual(len(video), 1, streams)
        self.assertEqual(video[0]["codec_name"], "h264")
        self.assertEqual((video[0]["width"], video[0]["height"]), (320, 240))

    def test_1_ffprobe_tcp(self):
        self.assert_h264_320x240(ffprobe(self.url(), tcp=True))

    def test_2_ffprobe_default_transport_is_udp(self):
        # ffprobe tries UDP first: it gets it (no 461, no fallback).
        r = ffprobe(self.url(), tcp=False, loglevel="warning")
        self.assert_h264_320x240(r)
        self.assertNotIn("461", r.stderr)
        a = self.a.log_text()
        self.assertNotIn("stops the RTSP connection", a)

    def test_3_multicast_only_setup_is_461(self):
        head = rtsp_request(
            self.lport,
            f"SETUP {self.url()}/stream=0 RTSP/1.0\r\nCSeq: 7\r\n"
            f"Transport: RTP/AVP;multicast;port=5000-5001\r\n\r\n")
        self.assertTrue(head.startswith("RTSP/1.0 461"), head)
        self.assertIn("CSeq: 7", head)

    def test_4_ffmpeg_decodes_frames(self):
        r = subprocess.run(
            ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error",
             "-rtsp_transport", "tcp",
             "-i", self.url(), "-t", "3", "-f", "null", "-"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("error", r.stderr.lower(), r.stderr)
        # Frames were decoded: run it again with stats for the frame count.
        r = subprocess.run(
            ["ffmpeg", "-hide_banner", "-nostdin", "-v", "info",
             "-rtsp_transport", "tcp",
             "-i", self.url(), "-t", "3", "-f", "null", "-"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        frames = [int(n) for n in re.findall(r"frame=\s*(\d+)", r.stderr)]
        self.assertTrue(frames and max(frames) >= 15, r.stderr[-2000:])

    def test_5_unknown_resource_is_404(self):
        head = rtsp_request(
            self.lport,
            f"OPTIONS {self.url('nothing/stream')} RTSP/1.0\r\nCSeq: 3\r\n\r\n")
        self.assertTrue(head.startswith("RTSP/1.0 404"), head)
        self.assertIn("CSeq: 3", head)
        r = ffprobe(self.url("nothing/stream"), tcp=True)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("404", r.stderr)
        self.assertIn("no online node exports 'nothing'", self.b.log_text())

    def test_6_still_serving(self):
        self.assert_h264_320x240(ffprobe(self.url(), tcp=True))
        self.assertTrue(self.a.alive() and self.b.alive())


if __name__ == "__main__":
    unittest.main()
