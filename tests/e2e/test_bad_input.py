"""Bad input on every listener (tcp, http, socks5, rtsp): garbage, an
oversize request line, oversize headers, no request within 10 s, an unknown
resource, a resource the export's ACL denies, and an offline peer. Each
client gets the error its protocol defines (docs/listeners.md), the
listener's refused_<reason> counter names the same reason, and afterwards a
good request on the same listener still works and the nodes are healthy.

The happy paths (downloads, uploads, keep-alive) are in test_listeners.py,
test_channels.py and test_rtsp.py; the refusals of all four listeners live
here, in one table."""
import os
import shutil
import socket
import subprocess
import threading
import time
import unittest

from harness import Lab, free_port, online, run, status, wait_until
from test_channels import Origin
from test_rtsp import SERVER as RTSP_SERVER, SYS_PYTHON, ffprobe, have_gst_rtsp

SNIFF_TIMEOUT = 10  # docs/listeners.md: time to send the first request


def exchange(port, payload=b"", timeout=30, pause=None):
    """Connects, sends `payload` (then waits `pause` s, then sends nothing
    more), reads until the proxy closes. Returns (bytes read, seconds from
    connect to close, how it ended: "eof" | "reset" | "open")."""
    got = b""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        if payload:
            s.sendall(payload)
        s.settimeout(timeout)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return got, time.monotonic() - t0, "eof"
                got += chunk
        except ConnectionResetError:
            return got, time.monotonic() - t0, "reset"
        except socket.timeout:
            return got, time.monotonic() - t0, "open"


def socks5_request(name, port=80):
    """The no-auth greeting and a CONNECT for a domain name."""
    n = name.encode()
    return (b"\x05\x01\x00" + b"\x05\x01\x00\x03" + bytes([len(n)]) + n
            + port.to_bytes(2, "big"))


def http_head(target, extra=""):
    return (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}"
            f"User-Agent: test\r\n\r\n").encode()


def rtsp_head(url, extra=""):
    return f"OPTIONS {url} RTSP/1.0\r\nCSeq: 5\r\n{extra}\r\n".encode()


BIG_HEADERS = "".join(f"X-Filler-{i}: {'v' * 100}\r\n" for i in range(170))  # ~19 KiB
LONG_PATH = "/r/web/" + "a" * 9000  # a request line over 8 KiB, under 16 KiB


class BadInput(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab()
        cls.rtsp = None
        cls.origin = None
        try:
            cls._setup()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def _setup(cls):
        cls.lab.start_server()
        www = os.path.join(cls.lab.dir, "www")
        os.makedirs(www)
        with open(os.path.join(www, "hello.txt"), "w") as f:
            f.write("hello through the tunnel\n")
        cls.origin = Origin(www)
        # A real RTSP server for the good RTSP request, when it can run.
        cls.rtsp_port = free_port()
        if have_gst_rtsp() and shutil.which("ffprobe"):
            cls.rtsp_log = open(os.path.join(cls.lab.dir, "rtsp_server.log"), "w+")
            cls.rtsp = subprocess.Popen([SYS_PYTHON, RTSP_SERVER, str(cls.rtsp_port)],
                                        stdout=subprocess.DEVNULL, stderr=cls.rtsp_log)
            wait_until(lambda: socket.create_connection(
                ("127.0.0.1", cls.rtsp_port), timeout=1).close() or True,
                20, "the RTSP server")
        # An exporting node that is never online, to pin listeners to.
        r = run(["keygen", "--out", os.path.join(cls.lab.dir, "ghost.key")])
        assert r.returncode == 0, r.stderr
        cls.ghost = [w for w in r.stdout.split() if len(w) == 52][0]
        exports = (
            f'[[export]]\nname = "web"\ntarget = "127.0.0.1:{cls.origin.port}"\n'
            f'protocol = "tcp"\nallow = ["*"]\n'
            f'[[export]]\nname = "secret"\ntarget = "127.0.0.1:{cls.origin.port}"\n'
            f'protocol = "tcp"\nallow = ["{"b" * 52}"]\n'
            f'[[export]]\nname = "cam1"\ntarget = "127.0.0.1:{cls.rtsp_port}"\n'
            f'protocol = "rtsp"\nallow = ["*"]\n')
        cls.a, cls.a_admin = cls.lab.node("node-a", extra=exports)
        # name -> (protocol, resource, pinned peer)
        spec = {
            "tcp": ("tcp", "web", ""),
            "tcp_nothing": ("tcp", "nothing", ""),
            "tcp_secret": ("tcp", "secret", ""),
            "tcp_offline": ("tcp", "web", cls.ghost),
            "http": ("http", "", ""),
            "http_offline": ("http", "", cls.ghost),
            "socks5": ("socks5", "", ""),
            "socks5_offline": ("socks5", "", cls.ghost),
            "rtsp": ("rtsp", "", ""),
            "rtsp_offline": ("rtsp", "", cls.ghost),
        }
        cls.port = {}
        listens = ""
        for name, (proto, resource, peer) in spec.items():
            cls.port[name] = free_port()
            listens += (f'[[listen]]\nbind = "127.0.0.1:{cls.port[name]}"\n'
                        f'protocol = "{proto}"\n')
            if resource:
                listens += f'resource = "{resource}"\n'
            if peer:
                listens += f'peer = "{peer}"\n'
        cls.b, cls.b_admin = cls.lab.node("node-b", extra=listens)
        wait_until(lambda: online(cls.a_admin), 10, "node A online")
        wait_until(lambda: online(cls.b_admin), 10, "node B online")
        for name, port in cls.port.items():
            wait_until(lambda: socket.create_connection(
                ("127.0.0.1", port), timeout=1).close() or True,
                10, f"node B's {name} listener")

    @classmethod
    def tearDownClass(cls):
        if cls.rtsp is not None:
            cls.rtsp.kill()
            cls.rtsp.wait(timeout=10)
            cls.rtsp_log.close()
            cls.rtsp = None
        cls.lab.close()
        if cls.origin is not None:
            cls.origin.close()
            cls.origin = None

    # -- helpers ---------------------------------------------------------------

    def counters(self, name):
        """The fields of node B's listener `name`."""
        bind = f"127.0.0.1:{self.port[name]}"
        for a in status(self.b_admin)["actors"]:
            if a["name"] == "listener" and a["fields"].get("bind") == bind:
                return a["fields"]
        self.fail(f"no listener {bind} in node B's status")

    def counted(self, name, reason, before):
        """Waits until listener `name` has counted one more `reason`."""
        key = "refused_" + reason
        want = int(before.get(key, 0)) + 1
        wait_until(lambda: int(self.counters(name).get(key, 0)) >= want, 10,
                   f"listener {name} to count {key} (was {before.get(key, 0)})")
        got = self.counters(name)
        self.assertEqual(int(got[key]), want, got)
        self.assertEqual(int(got["refused"]), int(before.get("refused", 0)) + 1, got)

    def refused(self, name, payload, reason, expect, pause=None, timeout=30):
        """Sends `payload` to listener `name`; the reply must start with
        `expect` (b"" = closed without a byte), the counter must name `reason`."""
        before = self.counters(name)
        got, took, how = exchange(self.port[name], payload, timeout=timeout)
        self.assertNotEqual(how, "open", f"{name}: the proxy kept the connection "
                            f"open after {took:.1f}s; read {got[:200]!r}")
        if expect:
            self.assertTrue(got.startswith(expect), f"{name}: {got[:300]!r}")
        else:
            self.assertEqual(got, b"", f"{name}: expected a bare close")
        self.counted(name, reason, before)
        return got, took

    def assert_healthy(self):
        self.assertTrue(self.a.alive(), "node A died")
        self.assertTrue(self.b.alive(), "node B died")
        self.assertEqual(online(self.a_admin)["signal"]["state"], "online")
        self.assertEqual(online(self.b_admin)["signal"]["state"], "online")

    def curl(self, *args, timeout=60):
        return subprocess.run(["curl", "-sS", "--max-time", str(timeout), "-o", "-"]
                              + list(args), capture_output=True, timeout=timeout + 10)

    def one_line_reason(self, reply, needle):
        """An HTTP/RTSP error reply: a text body 'p2proxy: <reason>' naming
        `needle`, on one line."""
        head, _, body = reply.partition(b"\r\n\r\n")
        self.assertTrue(body.startswith(b"p2proxy: "), reply[:400])
        self.assertEqual(body.rstrip(b"\r\n").count(b"\n"), 0, body)
        self.assertIn(needle.encode(), body)

    # -- HTTP -------------------------------------------------------------------

    def test_http_garbage_is_400(self):
        got, _ = self.refused("http", b"\x16\x03\x01\x02\x00\x01\xfc\x03\x03garbage\r\n\r\n",
                              "sniff_bad_request", b"HTTP/1.1 400 Bad Request\r\n")
        self.one_line_reason(got, "not an HTTP request")

    def test_http_oversize_request_line_is_414(self):
        got, _ = self.refused("http", http_head(LONG_PATH), "sniff_line_too_long",
                              b"HTTP/1.1 414 URI Too Long\r\n")
        self.one_line_reason(got, "request line longer than 8 KiB")

    def test_http_oversize_headers_is_431(self):
        got, _ = self.refused("http", http_head("/r/web/hello.txt", BIG_HEADERS),
                              "sniff_head_too_large",
                              b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
        self.one_line_reason(got, "request head larger than 16 KiB")

    def test_http_no_resource_is_404(self):
        got, _ = self.refused("http", http_head("/hello.txt"), "sniff_no_resource",
                              b"HTTP/1.1 404 Not Found\r\n")
        self.one_line_reason(got, "/r/<name>/")

    def test_http_unknown_resource_is_404(self):
        got, _ = self.refused("http", http_head("/r/nothing/"), "unknown_resource",
                              b"HTTP/1.1 404 Not Found\r\n")
        self.one_line_reason(got, "no online node exports 'nothing'")

    def test_http_denied_is_403(self):
        got, _ = self.refused("http", http_head("/r/secret/hello.txt"), "denied",
                              b"HTTP/1.1 403 Forbidden\r\n")
        self.one_line_reason(got, "is not allowed to use 'secret'")
        self.assertNotIn(b"hello through the tunnel", got)

    def test_http_peer_offline_is_502(self):
        got, _ = self.refused("http_offline", http_head("/r/web/hello.txt"),
                              "peer_offline", b"HTTP/1.1 502 Bad Gateway\r\n")
        self.one_line_reason(got, "offline")

    def test_http_curl_sees_the_reason(self):
        # What a user sees with a real client: the status and the reason.
        r = self.curl("-w", "\n%{http_code}", f"http://127.0.0.1:{self.port['http']}/r/secret/")
        self.assertEqual(r.returncode, 0, r.stderr)
        body, _, code = r.stdout.rpartition(b"\n")
        self.assertEqual(code, b"403")
        self.assertIn(b"is not allowed to use 'secret'", body)

    # -- RTSP -------------------------------------------------------------------

    def rtsp_url(self, name="rtsp", path="cam1/stream"):
        return f"rtsp://127.0.0.1:{self.port[name]}/{path}"

    def test_rtsp_garbage_is_400(self):
        got, _ = self.refused("rtsp", b"\x00\x01\x02\xffgarbage\r\n\r\n",
                              "sniff_bad_request", b"RTSP/1.0 400 Bad Request\r\n")
        self.one_line_reason(got, "not an RTSP request")

    def test_rtsp_oversize_request_line_is_414(self):
        got, _ = self.refused("rtsp", rtsp_head(self.rtsp_url(path="cam1/" + "a" * 9000)),
                              "sniff_line_too_long",
                              b"RTSP/1.0 414 Request-URI Too Large\r\n")
        self.one_line_reason(got, "request line longer than 8 KiB")

    def test_rtsp_oversize_headers_is_431(self):
        got, _ = self.refused("rtsp", rtsp_head(self.rtsp_url(), BIG_HEADERS),
                              "sniff_head_too_large",
                              b"RTSP/1.0 431 Request Header Fields Too Large\r\n")
        self.assertIn(b"CSeq: 5\r\n", got)
        self.one_line_reason(got, "request head larger than 16 KiB")

    def test_rtsp_no_resource_is_404(self):
        got, _ = self.refused("rtsp", rtsp_head(f"rtsp://127.0.0.1:{self.port['rtsp']}/"),
                              "sniff_no_resource", b"RTSP/1.0 404 Not Found\r\n")
        self.assertIn(b"CSeq: 5\r\n", got)

    def test_rtsp_unknown_resource_is_404(self):
        got, _ = self.refused("rtsp", rtsp_head(self.rtsp_url(path="nothing/stream")),
                              "unknown_resource", b"RTSP/1.0 404 Not Found\r\n")
        self.assertIn(b"CSeq: 5\r\n", got)
        self.one_line_reason(got, "no online node exports 'nothing'")

    def test_rtsp_denied_is_403(self):
        got, _ = self.refused("rtsp", rtsp_head(self.rtsp_url(path="secret/stream")),
                              "denied", b"RTSP/1.0 403 Forbidden\r\n")
        self.assertIn(b"CSeq: 5\r\n", got)
        self.one_line_reason(got, "is not allowed to use 'secret'")

    def test_rtsp_peer_offline_is_503(self):
        got, _ = self.refused("rtsp_offline", rtsp_head(self.rtsp_url("rtsp_offline")),
                              "peer_offline", b"RTSP/1.0 503 Service Unavailable\r\n")
        self.assertIn(b"CSeq: 5\r\n", got)
        self.one_line_reason(got, "offline")

    # -- SOCKS5 -----------------------------------------------------------------

    def socks5_refused(self, name, resource, code, reason):
        got, _ = self.refused(name, socks5_request(resource), reason, b"\x05\x00")
        self.assertEqual(len(got), 2 + 10, got)
        self.assertEqual(got[2:4], bytes([5, code]), f"SOCKS5 reply {got[2:]!r}")

    def test_socks5_garbage_is_closed(self):
        # Not a SOCKS5 greeting: closed without a byte (RFC 1928 has no
        # reply for it).
        self.refused("socks5", b"GET / HTTP/1.1\r\n\r\n", "sniff_bad_request", b"")

    def test_socks5_socks4_gets_a_socks4_reject(self):
        got, _ = self.refused("socks5", b"\x04\x01\x00\x50\x7f\x00\x00\x01user\x00",
                              "sniff_unsupported", b"\x00\x5b")

    def test_socks5_oversize_name_is_04(self):
        # The longest domain a SOCKS5 request carries (255) is no valid name.
        got, _ = self.refused("socks5", socks5_request("a" * 255), "sniff_no_resource",
                              b"\x05\x00")
        self.assertEqual(got[2:4], b"\x05\x04", got)

    def test_socks5_ip_address_is_08(self):
        req = b"\x05\x01\x00" + b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50"
        got, _ = self.refused("socks5", req, "sniff_unsupported", b"\x05\x00")
        self.assertEqual(got[2:4], b"\x05\x08", got)

    def test_socks5_unknown_resource_is_04(self):
        self.socks5_refused("socks5", "nothing", 0x04, "unknown_resource")

    def test_socks5_denied_is_02(self):
        self.socks5_refused("socks5", "secret", 0x02, "denied")

    def test_socks5_peer_offline_is_04(self):
        self.socks5_refused("socks5_offline", "web", 0x04, "peer_offline")

    def test_socks5_curl_sees_the_refusal(self):
        r = self.curl("--socks5-hostname", f"127.0.0.1:{self.port['socks5']}",
                      "http://secret/hello.txt", timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"SOCKS", r.stderr)
        self.assertEqual(r.stdout, b"")

    # -- TCP (no sniffing: bytes pass untouched) --------------------------------
    # A tcp listener parses nothing, so the size limits and the 10 s request
    # timeout do not apply; what it refuses, it refuses by closing.

    def test_tcp_unknown_resource_is_closed(self):
        self.refused("tcp_nothing", http_head("/hello.txt"), "unknown_resource", b"")
        self.assertIn("no online node exports 'nothing'", self.b.log_text())

    def test_tcp_denied_is_closed_and_nothing_reaches_the_target(self):
        self.refused("tcp_secret", http_head("/hello.txt"), "denied", b"")
        self.assertIn("is not allowed to use 'secret'", self.b.log_text())

    def test_tcp_peer_offline_is_closed(self):
        self.refused("tcp_offline", http_head("/hello.txt"), "peer_offline", b"")
        self.assertIn(f"node {self.ghost} is not logged in", self.b.log_text())

    def test_tcp_garbage_reaches_the_target_untouched(self):
        # A tcp listener does not parse: the HTTP origin itself answers 400.
        got, _, how = exchange(self.port["tcp"], b"\x16\x03\x01garbage\r\n\r\n")
        self.assertEqual(how, "eof")
        self.assertIn(b"Error code: 400", got, got[:300])
        self.assertNotIn(b"p2proxy", got)

    # -- no request within 10 s (all listeners at once) -------------------------

    def test_zz_no_request_within_10s(self):
        cases = {
            # listener: (what the client sends before falling silent, reply)
            "http": (b"GET /r/web/hello.txt HTTP/1.1\r\nHost: x\r\n",
                     b"HTTP/1.1 408 Request Timeout\r\n"),
            "rtsp": (b"OPTIONS rtsp://127.0.0.1/cam1 RTSP/1.0\r\nCSeq: 9\r\n",
                     b"RTSP/1.0 408 Request Timeout\r\n"),
            # SOCKS5, greeting answered: 05 00, then reply 01 (general failure)
            "socks5": (b"\x05\x01\x00", b"\x05\x00\x05\x01"),
        }
        before = {name: self.counters(name) for name in cases}
        before["socks5-silent"] = before["socks5"]
        results = {}

        def one(key, name, payload):
            results[key] = exchange(self.port[name], payload, timeout=SNIFF_TIMEOUT + 20)

        threads = [threading.Thread(target=one, args=(n, n, p)) for n, (p, _) in cases.items()]
        # A SOCKS5 client that never greets: closed without a byte.
        threads.append(threading.Thread(target=one, args=("socks5-silent", "socks5", b"")))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=SNIFF_TIMEOUT + 40)
        for key in list(cases) + ["socks5-silent"]:
            self.assertIn(key, results, f"{key}: no result")
            got, took, how = results[key]
            want = cases[key][1] if key in cases else b""
            self.assertNotEqual(how, "open", f"{key}: still open after {took:.1f}s")
            self.assertGreaterEqual(took, SNIFF_TIMEOUT - 0.5, f"{key}: closed early")
            self.assertLess(took, SNIFF_TIMEOUT + 15, f"{key}: closed late")
            if want:
                self.assertTrue(got.startswith(want), f"{key}: {got[:200]!r}")
            else:
                self.assertEqual(got, b"", key)
        self.assertIn(b"CSeq: 9", results["rtsp"][0])
        for name in ("http", "rtsp"):
            self.counted(name, "sniff_timeout", before[name])
        key = "refused_sniff_timeout"
        wait_until(lambda: int(self.counters("socks5").get(key, 0))
                   == int(before["socks5"].get(key, 0)) + 2, 10,
                   "the socks5 listener to count both timeouts")

    # -- afterwards: every listener still serves --------------------------------

    def test_zzz_every_listener_still_serves(self):
        body = b"hello through the tunnel\n"
        r = self.curl(f"http://127.0.0.1:{self.port['http']}/r/web/hello.txt")
        self.assertEqual((r.returncode, r.stdout), (0, body), r.stderr)
        r = self.curl("--socks5-hostname", f"127.0.0.1:{self.port['socks5']}",
                      "http://web/hello.txt")
        self.assertEqual((r.returncode, r.stdout), (0, body), r.stderr)
        r = self.curl(f"http://127.0.0.1:{self.port['tcp']}/hello.txt")
        self.assertEqual((r.returncode, r.stdout), (0, body), r.stderr)
        if self.rtsp is not None:
            r = ffprobe(self.rtsp_url())
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn('"codec_name": "h264"', r.stdout)
        self.assert_healthy()
        # Nothing left open on either node.
        for node, admin in (("A", self.a_admin), ("B", self.b_admin)):
            left = []
            def none_left():
                left[:] = status(admin).get("channels", [])
                return not left
            try:
                wait_until(none_left, 30, f"node {node}'s channels to end")
            except AssertionError:
                self.fail(f"node {node} still has channels: {left}")
        for p in (self.a, self.b):
            errors = [l for l in p.log_text().splitlines() if " ERROR " in l]
            self.assertEqual(errors, [], f"{p.name} logged errors")


if __name__ == "__main__":
    unittest.main()
