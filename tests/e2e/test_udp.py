"""UDP listeners and exports end to end: clients -> a udp listener on node B
-> one flow each (a stream + its QUIC DATAGRAMs) -> a udp export on node A ->
a real target: a UDP echo server, and dnsmasq queried with dig.

Asserts what a user sees: the datagrams come back intact, DNS answers, a
datagram too big for the path is dropped and counted (not mangled), a flood
from one client leaves another client's flow working, denied and surplus
flows are refused and counted, idle flows end, and the nodes stay up."""
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import unittest

from harness import Lab, http_get, online, run, status, wait_until


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Echo:
    """A UDP echo server: every datagram goes back to its sender."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        self.received = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.received += 1
            self.sock.sendto(data, addr)

    def close(self):
        self.stopped = True
        self.thread.join(timeout=2)
        self.sock.close()


def flow_rows(admin, bind_port):
    """The udp listener's status row for bind_port (its fields)."""
    for a in status(admin).get("actors", []):
        f = a.get("fields", {})
        if a.get("name") == "udp_listener" and f.get("bind", "").endswith(
                f":{bind_port}"):
            return f
    return None


def counter(admin, bind_port, name):
    row = flow_rows(admin, bind_port) or {}
    return int(row.get(name, "0"))


def client(timeout=2.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    return s


def ping(sock, port, payload, timeout=2.0, tries=3):
    """Sends payload until it comes back (or tries run out)."""
    sock.settimeout(timeout)
    for _ in range(tries):
        sock.sendto(payload, ("127.0.0.1", port))
        try:
            while True:
                data, _ = sock.recvfrom(65535)
                if data == payload:
                    return True
        except socket.timeout:
            continue
    return False


class Udp(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab()
        cls.lab.start_server()
        cls.echo = Echo()
        cls.dns_port = free_udp_port()
        cls.dnsmasq = None
        if shutil.which("dnsmasq"):
            cls.dnsmasq = subprocess.Popen(
                ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                 "--conf-file=/dev/null", "--user=root", "--pid-file=",
                 f"--port={cls.dns_port}", "--listen-address=127.0.0.1",
                 "--bind-interfaces",
                 "--address=/camera.test/198.18.0.42",
                 "--log-facility=-"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Node A's id, so one export can allow only A itself (B is denied).
        key_a = os.path.join(cls.lab.dir, "node-a.key")
        r = run(["keygen", "--out", key_a])
        assert r.returncode == 0, r.stderr
        id_a = run(["id", "--key", key_a]).stdout.strip()
        exports = (
            f'[[export]]\nname = "echo"\ntarget = "127.0.0.1:{cls.echo.port}"\n'
            f'protocol = "udp"\nallow = ["*"]\n'
            f'[[export]]\nname = "dns"\ntarget = "127.0.0.1:{cls.dns_port}"\n'
            f'protocol = "udp"\nallow = ["*"]\n'
            f'[[export]]\nname = "private"\ntarget = "127.0.0.1:{cls.echo.port}"\n'
            f'protocol = "udp"\nallow = ["{id_a}"]\n'
            f'[[export]]\nname = "tcp-echo"\ntarget = "127.0.0.1:9"\n'
            f'protocol = "tcp"\nallow = ["*"]\n')
        cls.a, cls.a_admin = cls.lab.node("node-a", extra=exports)
        cls.echo_port = free_udp_port()
        cls.dig_port = free_udp_port()
        cls.private_port = free_udp_port()
        cls.few_port = free_udp_port()
        cls.idle_port = free_udp_port()
        cls.mismatch_port = free_udp_port()
        listens = (
            f'[[listen]]\nbind = "127.0.0.1:{cls.echo_port}"\nprotocol = "udp"\n'
            f'resource = "echo"\n'
            f'[[listen]]\nbind = "127.0.0.1:{cls.dig_port}"\nprotocol = "udp"\n'
            f'resource = "dns"\n'
            f'[[listen]]\nbind = "127.0.0.1:{cls.private_port}"\nprotocol = "udp"\n'
            f'resource = "private"\n'
            f'[[listen]]\nbind = "127.0.0.1:{cls.few_port}"\nprotocol = "udp"\n'
            f'resource = "echo"\nmax_flows = 1\n'
            f'[[listen]]\nbind = "127.0.0.1:{cls.idle_port}"\nprotocol = "udp"\n'
            f'resource = "echo"\nudp_idle = "1s"\n'
            f'[[listen]]\nbind = "127.0.0.1:{cls.mismatch_port}"\nprotocol = "udp"\n'
            f'resource = "tcp-echo"\n')
        cls.b, cls.b_admin = cls.lab.node("node-b", extra=listens)
        wait_until(lambda: online(cls.a_admin), 10, "node A online")
        wait_until(lambda: online(cls.b_admin), 10, "node B online")
        # The session and QUIC's path MTU discovery, as any first user.
        with client() as s:
            assert ping(s, cls.echo_port, b"warm-up", timeout=3), "no echo"
        time.sleep(0.5)

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()
        cls.echo.close()
        if cls.dnsmasq:
            cls.dnsmasq.terminate()
            cls.dnsmasq.wait(timeout=10)

    def healthy(self):
        self.assertTrue(self.a.alive() and self.b.alive())
        with client() as s:
            self.assertTrue(ping(s, self.echo_port, b"still there?"))

    def test_ten_thousand_datagrams_of_1_to_1200_bytes_come_back_intact(self):
        n = 10000
        sent = {}
        back = {}
        corrupted = 0
        window = 32
        with client(timeout=0.5) as s:
            nxt = 0
            outstanding = set()
            deadline = time.monotonic() + 60
            while (nxt < n or outstanding) and time.monotonic() < deadline:
                while nxt < n and len(outstanding) < window:
                    size = 1 + (nxt * 7919) % 1200
                    body = os.urandom(size)
                    sent[nxt] = body
                    head = struct.pack("!I", nxt)[:size] if size >= 4 else b""
                    s.sendto(head + body[len(head):], ("127.0.0.1", self.echo_port))
                    sent[nxt] = head + body[len(head):]
                    outstanding.add(nxt)
                    nxt += 1
                try:
                    data, _ = s.recvfrom(65535)
                except socket.timeout:
                    outstanding.clear()  # lost ones stay lost; go on
                    continue
                if len(data) >= 4:
                    seq = struct.unpack("!I", data[:4])[0]
                    if seq in sent and sent[seq] == data:
                        back[seq] = True
                        outstanding.discard(seq)
                    else:
                        corrupted += 1
                else:
                    # 1-3 byte datagrams carry no sequence number: match by
                    # content among the outstanding ones.
                    hit = [q for q in outstanding if sent[q] == data]
                    if hit:
                        back[hit[0]] = True
                        outstanding.discard(hit[0])
                    else:
                        corrupted += 1
        self.assertEqual(corrupted, 0)
        self.assertGreaterEqual(len(back), 0.995 * n,
                                f"{len(back)} of {n} came back")

    def test_dig_resolves_through_a_udp_listener(self):
        if not shutil.which("dig") or self.dnsmasq is None:
            self.skipTest("dig/dnsmasq missing: apt-get install bind9-dnsutils "
                          "dnsmasq-base (deploy/install-deps.sh)")
        for _ in range(3):  # each dig is a new client port: a new flow
            r = subprocess.run(
                ["dig", "@127.0.0.1", "-p", str(self.dig_port), "camera.test",
                 "A", "+short", "+tries=1", "+time=3"],
                capture_output=True, text=True, timeout=15)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(r.stdout.strip(), "198.18.0.42")
        wait_until(lambda: counter(self.b_admin, self.dig_port,
                                   "flows_opened") >= 3, 5, "three flows")

    def test_an_oversize_datagram_is_dropped_and_counted(self):
        with client() as s:
            self.assertTrue(ping(s, self.echo_port, b"before"))
            s.sendto(os.urandom(3000), ("127.0.0.1", self.echo_port))
            wait_until(lambda: counter(self.b_admin, self.echo_port,
                                       "dropped_oversize") >= 1,
                       5, "the oversize datagram counted")
            s.settimeout(0.5)
            got = []
            try:
                while True:
                    got.append(s.recvfrom(65535)[0])
            except socket.timeout:
                pass
            self.assertFalse([g for g in got if len(g) > 1500],
                             "the oversize datagram came back")
            self.assertTrue(ping(s, self.echo_port, b"after"))

    def test_a_flood_from_one_client_does_not_starve_another(self):
        stop = threading.Event()
        flooded = [0]

        def flood():
            with client() as f:
                blob = os.urandom(1200)
                end = time.monotonic() + 8
                while not stop.is_set() and time.monotonic() < end:
                    try:
                        f.sendto(blob, ("127.0.0.1", self.echo_port))
                        flooded[0] += 1
                    except OSError:
                        time.sleep(0.001)

        t = threading.Thread(target=flood, daemon=True)
        t.start()
        time.sleep(0.5)
        ok = 0
        with client() as s:
            for i in range(100):
                if ping(s, self.echo_port, b"q%d" % i, timeout=1, tries=1):
                    ok += 1
        stop.set()
        t.join(timeout=10)
        self.assertGreater(flooded[0], 10000, "the flood did not flood")
        self.assertGreaterEqual(ok, 90, f"{ok} of 100 answered under the flood")
        self.healthy()

    def test_a_denied_flow_is_refused_counted_and_nothing_reaches_the_target(self):
        before = self.echo.received
        with client(timeout=0.5) as s:
            for i in range(5):
                s.sendto(b"let me in %d" % i, ("127.0.0.1", self.private_port))
                time.sleep(0.2)
            with self.assertRaises(socket.timeout):
                s.recvfrom(65535)
        wait_until(lambda: counter(self.b_admin, self.private_port,
                                   "refused_denied") == 1, 5, "one refusal")
        self.assertGreater(counter(self.b_admin, self.private_port,
                                   "dropped_refused"), 0)
        self.assertEqual(self.echo.received, before)
        self.healthy()

    def test_a_udp_flow_to_a_tcp_export_is_refused(self):
        with client(timeout=1) as s:
            s.sendto(b"hello", ("127.0.0.1", self.mismatch_port))
            with self.assertRaises(socket.timeout):
                s.recvfrom(65535)
        wait_until(lambda: counter(self.b_admin, self.mismatch_port,
                                   "refused") == 1, 5, "the refusal")
        self.healthy()

    def test_flows_beyond_max_flows_are_dropped_and_counted(self):
        with client() as s1, client(timeout=1) as s2:
            self.assertTrue(ping(s1, self.few_port, b"first"))
            s2.sendto(b"second", ("127.0.0.1", self.few_port))
            with self.assertRaises(socket.timeout):
                s2.recvfrom(65535)
            self.assertEqual(counter(self.b_admin, self.few_port,
                                     "dropped_flows_full"), 1)
            self.assertTrue(ping(s1, self.few_port, b"first again"))

    def test_an_idle_flow_ends_and_the_client_gets_a_new_one(self):
        with client() as s:
            self.assertTrue(ping(s, self.idle_port, b"one"))
            self.assertEqual(counter(self.b_admin, self.idle_port, "flows"), 1)
            wait_until(lambda: counter(self.b_admin, self.idle_port,
                                       "flows") == 0, 5, "the idle flow ended")
            self.assertTrue(ping(s, self.idle_port, b"two"))
            self.assertEqual(counter(self.b_admin, self.idle_port,
                                     "flows_opened"), 2)

    def test_per_flow_status_counts_both_ways(self):
        with client() as s:
            for i in range(10):
                self.assertTrue(ping(s, self.echo_port, b"x" * 100))
            me = "127.0.0.1:%d" % s.getsockname()[1]
            row = flow_rows(self.b_admin, self.echo_port)
            line = row.get("flow " + me, "")
            self.assertIn("state=open", line)
            self.assertIn("datagrams_in=10 ", line)
            self.assertIn("datagrams_out=10 ", line)
            self.assertIn("bytes_in=1000 ", line)
        code, text = http_get(f"http://127.0.0.1:{self.b_admin}/metrics")
        self.assertEqual(code, 200)
        self.assertIn('p2proxy_udp_datagrams_total{listener="127.0.0.1:%d",'
                      'direction="in"}' % self.echo_port, text)
        self.assertIn('p2proxy_udp_flows{listener="127.0.0.1:%d"}'
                      % self.echo_port, text)


if __name__ == "__main__":
    unittest.main()
