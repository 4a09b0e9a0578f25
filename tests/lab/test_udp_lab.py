"""UDP through two NATs: node B (behind NAT B) has udp listeners, node A (behind NAT A) exports
dnsmasq and a UDP echo server as udp exports; clients in hostB's namespace use them.

- dig in hostB resolves a name served by dnsmasq in hostA (a real DNS server, started here);
- 2000 datagrams of 1-1200 bytes through the echo come back >= 99.5 %, none corrupted.

Needs root (network namespaces); skips without it, fails under CI=true."""
import itertools
import json
import os
import sys
import time
import unittest

import natlab
from natlab import NatLab, PY

_counter = itertools.count()

DNS_ADDR = ("127.0.0.1", 5353)    # dnsmasq in hostA
ECHO_ADDR = ("127.0.0.1", 9007)   # the UDP echo in hostA
DIG_LISTEN = ("127.0.0.1", 9053)  # node B's udp listeners
ECHO_LISTEN = ("127.0.0.1", 9054)

ECHO_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(65535)
    s.sendto(d, a)
"""

# Sends N datagrams (sizes 1-1200, a sequence number in front) with a window of 32; prints one
# JSON line: how many came back intact, how many corrupted.
ECHO_CLIENT = r"""
import json, os, socket, struct, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.settimeout(3)
# a first datagram opens the flow and the session (and lets QUIC find the path MTU)
for _ in range(10):
    s.sendto(b"warm-up", ("127.0.0.1", port))
    try:
        if s.recvfrom(65535)[0] == b"warm-up":
            break
    except socket.timeout:
        pass
time.sleep(1)
s.settimeout(0.5)
sent, back, bad, nxt, out = {}, set(), 0, 0, set()
deadline = time.monotonic() + 60
while (nxt < n or out) and time.monotonic() < deadline:
    while nxt < n and len(out) < 32:
        size = max(4, 1 + (nxt * 7919) % 1200)
        d = struct.pack("!I", nxt) + os.urandom(size - 4)
        sent[nxt] = d
        s.sendto(d, ("127.0.0.1", port))
        out.add(nxt)
        nxt += 1
    try:
        d = s.recvfrom(65535)[0]
    except socket.timeout:
        out.clear()
        continue
    q = struct.unpack("!I", d[:4])[0] if len(d) >= 4 else -1
    if sent.get(q) == d:
        back.add(q)
        out.discard(q)
    else:
        bad += 1
print(json.dumps({"sent": n, "back": len(back), "corrupted": bad}))
"""


class UdpLab(NatLab):
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
        self.lab("spawn", "hostA", "dnsmasq", "dnsmasq", "--keep-in-foreground",
                 "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--user=root",
                 "--pid-file=", "--port=%d" % DNS_ADDR[1], "--listen-address=%s" % DNS_ADDR[0],
                 "--bind-interfaces", "--address=/camera.test/198.18.0.42")
        self.lab("spawn", "hostA", "echo", PY, "-c", ECHO_SERVER, ECHO_ADDR[0],
                 str(ECHO_ADDR[1]))
        self.start_node("A", """
[[export]]
name = "dns"
target = "%s:%d"
protocol = "udp"
allow = ["*"]

[[export]]
name = "echo"
target = "%s:%d"
protocol = "udp"
allow = ["*"]
""" % (DNS_ADDR + ECHO_ADDR))
        self.start_node("B", """
[[listen]]
bind = "%s:%d"
protocol = "udp"
resource = "dns"

[[listen]]
bind = "%s:%d"
protocol = "udp"
resource = "echo"
""" % (DIG_LISTEN + ECHO_LISTEN))
        for n in ("A", "B"):
            self.wait_online(n)


class UdpThroughNats(unittest.TestCase):
    def setUp(self):
        self.bin = natlab.require_lab(self, "lab UDP tests", ("dig", "dnsmasq"))
        prefix = "tu%d-%d" % (os.getpid() % 100000, next(_counter))
        self.lab = UdpLab(self.bin, prefix, "eim", "eim")
        self.addCleanup(self.lab.down)
        self.t0 = time.monotonic()
        self.lab.up()

    def logs(self):
        try:
            return self.lab.logs()
        except Exception as e:  # diagnostics only
            return "(no logs: %s)" % e

    def test_dig_and_echo_through_two_nats(self):
        r = None
        for _ in range(3):  # the first query also opens the session (ICE, QUIC)
            r = self.lab.in_ns("hostB", ["dig", "@%s" % DIG_LISTEN[0], "-p", str(DIG_LISTEN[1]),
                                         "camera.test", "A", "+short", "+tries=1",
                                         "+time=10"], 30)
            if r.stdout.strip():
                break
        self.assertEqual(r.stdout.strip(), "198.18.0.42", r.stdout + r.stderr + self.logs())
        r = self.lab.in_ns("hostB", [PY, "-c", ECHO_CLIENT, str(ECHO_LISTEN[1]), "2000"], 120)
        res = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else None
        self.assertIsNotNone(res, r.stderr + self.logs())
        self.assertEqual(res["corrupted"], 0, res)
        self.assertGreaterEqual(res["back"], 0.995 * res["sent"], res)
        sys.stderr.write("  [udp lab] %s, %.1fs\n" % (res, time.monotonic() - self.t0))


if __name__ == "__main__":
    unittest.main()
