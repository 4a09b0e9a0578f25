"""RTSP clients that want UDP get UDP (docs/listeners.md, "RTSP over UDP"):
GStreamer's rtspsrc (protocols=udp) and ffmpeg (-rtsp_transport udp) ->
rtsp listener on node B (a local RTP/RTCP pair per track) -> QUIC datagrams
-> node A -> a real RTSP server (tests/e2e/rtsp_server.py), by interleaved
TCP (export cam1) or by UDP (export cam2, rtsp_transport = "udp").

Asserts: >= 95 % of the frames of 10 s decoded without errors, for one
client and for six at once; a TCP client still works; 50 play/teardown
cycles leave no UDP socket, channel or camera connection behind; RTCP goes
both ways; nonsense SETUP ports and junk datagrams are refused or dropped
and counted while the nodes stay healthy.

Needs /usr/bin/python3 with gi, gst-rtsp-server, gstreamer1.0-plugins-good,
gstreamer1.0-libav, and ffmpeg (deploy/install-deps.sh)."""
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import unittest

from harness import Lab, free_port, online, status, wait_until
from test_rtsp import SERVER, SYS_PYTHON, have_gst_rtsp

GST_PLAY = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "gst_play.py")
FPS = 15
SECONDS = 10
MIN_FRAMES = int(FPS * SECONDS * 0.95)


def have_gst_player():
    r = subprocess.run(
        [SYS_PYTHON, "-c", "import gi; gi.require_version('Gst', '1.0'); "
         "from gi.repository import Gst; Gst.init(None); "
         "assert Gst.ElementFactory.find('rtspsrc'); "
         "assert Gst.ElementFactory.find('avdec_h264')"],
        capture_output=True, timeout=30)
    return r.returncode == 0


def udp_sockets(pid):
    """The UDP sockets process `pid` holds (by inode)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", link)
        if m:
            inodes.add(m.group(1))
    udp = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[9] in inodes:
                    udp.add(cols[9])
    return udp


def tcp_connections_to(port):
    """Established TCP connections to 127.0.0.1:`port` (either end)."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            local, remote, st = cols[1], cols[2], cols[3]
            if st == "01" and (local.endswith(f":{port:04X}")
                               or remote.endswith(f":{port:04X}")):
                n += 1
    return n


def channels(admin):
    return status(admin).get("channels", [])


def field(ch, name):
    return int(ch.get(name, 0))


class RtspClient:
    """A minimal RTSP client over UDP (for cycles and bad input)."""

    def __init__(self, port, timeout=10):
        self.port = port
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.cseq = 0
        self.buf = b""

    def request(self, method, url, headers=""):
        self.cseq += 1
        self.s.sendall(f"{method} {url} RTSP/1.0\r\nCSeq: {self.cseq}\r\n"
                       f"{headers}\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed: {self.buf!r}")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        text = head.decode(errors="replace")
        m = re.search(r"Content-Length:\s*(\d+)", text, re.I)
        n = int(m.group(1)) if m else 0
        while len(rest) < n:
            rest += self.s.recv(65536)
        self.buf = rest[n:]
        return text, rest[:n].decode(errors="replace")

    def close(self):
        self.s.close()


def header(text, name):
    m = re.search(rf"^{name}:\s*(.*?)\r?$", text, re.I | re.M)
    return m.group(1) if m else ""


@unittest.skipUnless(shutil.which("ffmpeg"), "needs ffmpeg")
class RtspUdp(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not have_gst_rtsp() or not have_gst_player():
            raise unittest.SkipTest(
                "needs /usr/bin/python3 with gi, gst-rtsp-server, rtspsrc "
                "and avdec_h264 (deploy/install-deps.sh)")
        cls.lab = Lab()
        cls.server = None
        try:
            cls.rtsp_port = free_port()
            cls.server_log = open(os.path.join(cls.lab.dir, "rtsp_server.log"),
                                  "w+")
            # One pipeline per client: each starts at a key frame, and many
            # clients coming and going do not deadlock a shared one.
            cls.server = subprocess.Popen(
                [SYS_PYTHON, SERVER, str(cls.rtsp_port), "--per-client"],
                stdout=subprocess.PIPE, stderr=cls.server_log, text=True)
            wait_until(lambda: socket.create_connection(
                ("127.0.0.1", cls.rtsp_port), timeout=1).close() or True,
                20, "the RTSP server")
            cls.lab.start_server()
            # A second camera whose sessions time out after 4 s.
            cls.short_port = free_port()
            cls.short = subprocess.Popen(
                [SYS_PYTHON, SERVER, str(cls.short_port), "--per-client",
                 "--session-timeout", "4"],
                stdout=subprocess.PIPE, stderr=cls.server_log, text=True)
            wait_until(lambda: socket.create_connection(
                ("127.0.0.1", cls.short_port), timeout=1).close() or True,
                20, "the second RTSP server")
            target = f"127.0.0.1:{cls.rtsp_port}"
            exports = (f'[[export]]\nname = "cam1"\ntarget = "{target}"\n'
                       f'protocol = "rtsp"\nallow = ["*"]\n'
                       f'[[export]]\nname = "cam2"\ntarget = "{target}"\n'
                       f'protocol = "rtsp"\nrtsp_transport = "udp"\n'
                       f'allow = ["*"]\n'
                       f'[[export]]\nname = "cam3"\n'
                       f'target = "127.0.0.1:{cls.short_port}"\n'
                       f'protocol = "rtsp"\nallow = ["*"]\n')
            cls.a, cls.a_admin = cls.lab.node("node-a", extra=exports)
            cls.lport = free_port()
            # The session stays up between the tests, so its sockets are in
            # every baseline (see setUp).
            listens = ('[session]\nidle_linger = "600s"\n'
                       f'[[listen]]\nbind = "127.0.0.1:{cls.lport}"\n'
                       f'protocol = "rtsp"\n')
            cls.b, cls.b_admin = cls.lab.node("node-b", extra=listens)
            wait_until(lambda: online(cls.a_admin), 10, "node A online")
            wait_until(lambda: online(cls.b_admin), 10, "node B online")
            wait_until(lambda: socket.create_connection(
                ("127.0.0.1", cls.lport), timeout=1).close() or True,
                10, "node B's rtsp listener")
            c = RtspClient(cls.lport)  # the session between the nodes
            try:
                c.request("OPTIONS", f"rtsp://127.0.0.1:{cls.lport}/cam1/s")
            finally:
                c.close()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "short", None) is not None:
            cls.short.kill()
            cls.short.wait(timeout=10)
            cls.short.stdout.close()
            cls.short = None
        if cls.server is not None:
            cls.server.kill()
            cls.server.wait(timeout=10)
            cls.server.stdout.close()
            cls.server_log.close()
            cls.server = None
        cls.lab.close()

    def url(self, cam="cam1"):
        return f"rtsp://127.0.0.1:{self.lport}/{cam}/stream"

    def ffmpeg(self, cam="cam1", transport="udp"):
        return subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-nostdin", "-v", "error",
             "-rtsp_transport", transport, "-buffer_size", "1048576",
             "-i", self.url(cam),
             "-t", str(SECONDS), "-f", "framemd5", "-"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def assert_frames(self, proc, what):
        out, err = proc.communicate(timeout=SECONDS + 40)
        frames = [ln for ln in out.splitlines() if ln and ln[0] != "#"]
        self.assertEqual(proc.returncode, 0, f"{what}: {err[-2000:]}")
        self.assertEqual(err.strip(), "", f"{what}: decoder errors")
        self.assertGreaterEqual(len(frames), MIN_FRAMES,
                                f"{what}: {len(frames)} frames")

    def assert_idle(self):
        """No channel, no UDP socket, no camera connection left over."""
        def settled():
            return (not channels(self.a_admin) and not channels(self.b_admin)
                    and udp_sockets(self.a.p.pid) == self.udp_a
                    and udp_sockets(self.b.p.pid) == self.udp_b
                    and tcp_connections_to(self.rtsp_port) == 0)
        try:
            wait_until(settled, 15, "everything freed")
        except AssertionError:
            self.fail(f"left over: A {channels(self.a_admin)} "
                      f"{udp_sockets(self.a.p.pid) - self.udp_a}, B "
                      f"{channels(self.b_admin)} "
                      f"{udp_sockets(self.b.p.pid) - self.udp_b}, camera "
                      f"{tcp_connections_to(self.rtsp_port)}")

    def setUp(self):
        wait_until(lambda: not channels(self.a_admin)
                   and not channels(self.b_admin), 15, "no channels")
        self.udp_a = udp_sockets(self.a.p.pid)
        self.udp_b = udp_sockets(self.b.p.pid)

    def test_1_gstreamer_udp_only(self):
        r = subprocess.run([SYS_PYTHON, GST_PLAY, self.url(), str(SECONDS)],
                           capture_output=True, text=True,
                           timeout=SECONDS + 40)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        self.assertEqual(res["errors"], [], r.stderr[-2000:])
        self.assertGreaterEqual(res["frames"], MIN_FRAMES, res)
        self.assert_idle()

    def test_2_ffmpeg_udp(self):
        self.assert_frames(self.ffmpeg(), "ffmpeg udp")
        self.assert_idle()

    def test_3_camera_over_udp(self):
        self.assert_frames(self.ffmpeg("cam2"), "ffmpeg udp, camera udp")
        self.assert_idle()

    def test_4_tcp_client_unchanged(self):
        self.assert_frames(self.ffmpeg(transport="tcp"), "ffmpeg tcp")
        self.assert_frames(self.ffmpeg("cam2", transport="tcp"),
                           "ffmpeg tcp, udp export")
        self.assert_idle()

    def test_5_six_clients_at_once(self):
        procs = [self.ffmpeg("cam1" if i % 2 else "cam2") for i in range(6)]
        for i, p in enumerate(procs):
            self.assert_frames(p, f"client {i}")
        self.assert_idle()

    def play_once(self, cam, rtcp_from_client=False, silent=False):
        """SETUP (UDP), PLAY, an RTP packet arrives, TEARDOWN (or, when
        `silent`, nothing more: the session must time out)."""
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for _ in range(20):  # an even/odd pair of our own
                rtp.bind(("127.0.0.1", 0))
                port = rtp.getsockname()[1]
                if port % 2 == 0:
                    try:
                        rtcp.bind(("127.0.0.1", port + 1))
                        break
                    except OSError:
                        pass
                rtp.close()
                rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtp.settimeout(5)
            c = RtspClient(self.lport)
            try:
                head, body = c.request("DESCRIBE", self.url(cam),
                                       "Accept: application/sdp\r\n")
                self.assertIn(" 200 ", head.splitlines()[0], head)
                track = re.findall(r"^a=control:(\S+)", body, re.M)[-1]
                if not track.startswith("rtsp:"):
                    track = self.url(cam) + "/" + track
                head, _ = c.request(
                    "SETUP", track, f"Transport: RTP/AVP;unicast;"
                    f"client_port={port}-{port + 1}\r\n")
                self.assertIn(" 200 ", head.splitlines()[0], head)
                tr = header(head, "Transport")
                self.assertIn(f"client_port={port}-{port + 1}", tr)
                m = re.search(r"server_port=(\d+)-(\d+)", tr)
                self.assertTrue(m, tr)
                sport = int(m.group(1))
                self.assertEqual(sport % 2, 0, tr)
                self.assertEqual(int(m.group(2)), sport + 1, tr)
                session = header(head, "Session").split(";")[0]
                head, _ = c.request("PLAY", self.url(cam),
                                    f"Session: {session}\r\n")
                self.assertIn(" 200 ", head.splitlines()[0], head)
                data, src = rtp.recvfrom(2048)
                self.assertEqual(src[1], sport)  # from the pair's RTP port
                self.assertEqual(data[0] >> 6, 2)  # RTP version 2
                if rtcp_from_client:
                    # A receiver report (RTCP both ways) and junk.
                    rr = struct.pack("!BBHI", 0x80, 201, 1, 0x1234)
                    rtcp.sendto(rr, ("127.0.0.1", sport + 1))
                    rtcp.sendto(b"\x00", ("127.0.0.1", sport + 1))
                    rtcp.sendto(b"junk-rtcp", ("127.0.0.1", sport + 1))
                    wait_until(lambda: any(
                        field(ch, "mediaFromPeer") >= 1
                        for ch in channels(self.a_admin)), 5,
                        "the client's RTCP at node A")
                    wait_until(lambda: any(
                        field(ch, "mediaDroppedBad") >= 2
                        for ch in channels(self.b_admin)), 5,
                        "the junk counted at node B")
                if silent:
                    # No keep-alive, no RTCP: the listening node ends the
                    # connection once the session's timeout (4 s) is over.
                    c.s.settimeout(15)
                    t0 = time.monotonic()
                    try:
                        while c.s.recv(65536):
                            pass
                    except ConnectionResetError:
                        pass
                    waited = time.monotonic() - t0
                    self.assertLess(waited, 12)
                    self.assertGreater(waited, 3)
                    self.assertIn("the client was silent longer than its "
                                  "session's timeout",
                                  self.b.log_text())
                    return
                head, _ = c.request("TEARDOWN", self.url(cam),
                                    f"Session: {session}\r\n")
                self.assertIn(" 200 ", head.splitlines()[0], head)
            finally:
                c.close()
        finally:
            rtp.close()
            rtcp.close()

    def test_6_rtcp_and_junk(self):
        self.play_once("cam1", rtcp_from_client=True)
        self.play_once("cam2", rtcp_from_client=True)
        self.assert_idle()

    def test_7_fifty_cycles_leave_nothing(self):
        for i in range(50):
            self.play_once("cam1" if i % 2 else "cam2")
        self.assert_idle()

    def test_7b_silent_client_times_out(self):
        self.play_once("cam3", silent=True)
        self.assert_idle()

    def test_8_nonsense_ports(self):
        for ports in ("abc-def", "0-1", "5001-5000", "70000-70001",
                      "5000-5003", ""):
            c = RtspClient(self.lport)
            try:
                head, _ = c.request("OPTIONS", self.url())
                self.assertIn(" 200 ", head.splitlines()[0], head)
                head, _ = c.request(
                    "SETUP", self.url() + "/stream=0",
                    f"Transport: RTP/AVP;unicast;client_port={ports}\r\n")
                self.assertTrue(head.startswith("RTSP/1.0 400"),
                                f"{ports}: {head}")
                self.assertIn("CSeq: 2", head)
            finally:
                c.close()
        # A client's own P2proxy-Media mark goes nowhere.
        c = RtspClient(self.lport)
        try:
            head, _ = c.request("OPTIONS", self.url(),
                                "P2proxy-Media: datagram\r\n")
            self.assertIn(" 200 ", head.splitlines()[0], head)
        finally:
            c.close()
        self.assertTrue(self.a.alive() and self.b.alive())
        self.assert_idle()
        self.assert_frames(self.ffmpeg(), "ffmpeg udp after bad input")


if __name__ == "__main__":
    unittest.main()
