"""Two signaling servers on one Redis through the NAT lab (docs/cluster.md).

One lab (deploy/lab/lab.sh, its own prefix), both hosts behind endpoint-independent NATs.
In pub: Debian's redis-server on pub's 127.0.0.1 (no persistence, its own directory, started
and stopped by pid through lab.sh), signaling server 1 on 198.18.0.10:7000 and server 2 on
198.18.0.1:7000, both with the same key and --redis, and coturn. Node A (hostA) lists both
servers but is started while only server 1 runs, so server 1 holds it; node B (hostB) lists
server 2 only. Asserted, in this order:
- a session between them: B's look-up, offer, answer and candidates cross the servers through
  Redis, and a SHA-256-checked transfer arrives byte-exact;
- Redis restarted: both servers say so in their status and keep their nodes; once it is back
  they resynchronise (A's presence is in Redis again) and a new session (node B restarted)
  works across the servers;
- server 1 killed (SIGKILL): A is online on server 2 within 5 s and the session carries on
  (same session id, byte-exact transfer).

Needs root and the p2proxy binary ($P2PROXY_BIN, else the newest build*/p2proxy). Not root:
skips, except under CI=true, where it fails.

    cd tests/lab && CI=true P2PROXY_BIN=../../build/p2proxy python3 -m unittest -v test_cluster
"""
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
import unittest

import natlab
from natlab import NODE_ADMIN, PUB_IP, PUB_IP2, TURN, TURN_PASS, TURN_USER

SERVERS = ["%s:7000" % PUB_IP2, "%s:7000" % PUB_IP]
ADMINS = ["127.0.0.1:7071", "127.0.0.1:7072"]  # pub's loopback
REDIS_PORT = 6379  # pub's own loopback: nothing else listens there
MIB = 1 << 20
_counter = itertools.count()


class ClusterLab(unittest.TestCase):
    def setUp(self):
        binary = natlab.require_lab(self, "cluster lab tests", ("redis-server", "redis-cli"))
        prefix = "tc%d-%d" % (os.getpid() % 100000, next(_counter))
        self.lab = natlab.NatLab(binary, prefix, "eim", "eim", log_level="info")
        self.addCleanup(self.lab.down)
        self.t0 = time.monotonic()

    def note(self, msg):
        sys.stderr.write("  [%.1fs] %s\n" % (time.monotonic() - self.t0, msg))
        sys.stderr.flush()

    # --- helpers -------------------------------------------------------------------------
    def pub_json(self, admin, path="/v1/status"):
        code, body = self.lab.http("pub", admin, path, timeout=5)
        return body if code == 200 else None

    def cluster(self, i):
        st = self.pub_json(ADMINS[i])
        return (st or {}).get("cluster", {})

    def held(self, i):
        st = self.pub_json(ADMINS[i]) or {}
        return {n["nodeId"] for n in st.get("nodes", [])}

    def redis_cli(self, *args):
        r = self.lab.in_ns("pub", ["redis-cli", "-p", str(REDIS_PORT), *args], 10)
        return r.stdout.strip()

    def start_redis(self):
        d = os.path.join(self.lab.tmp, "redis")
        os.makedirs(d, exist_ok=True)
        self.lab.lab("spawn", "pub", "redis", shutil.which("redis-server"), "--port",
                     str(REDIS_PORT), "--bind", "127.0.0.1", "--dir", d, "--save", "",
                     "--appendonly", "no", "--daemonize", "no")
        self.lab.wait("redis-server", lambda: self.redis_cli("PING") == "PONG", 10)

    def start_server(self, i):
        self.lab.lab("spawn", "pub", "signal%d" % (i + 1), self.lab.bin, "signal",
                     "--listen", SERVERS[i], "--key", os.path.join(self.lab.tmp, "signal.key"),
                     "--admin", ADMINS[i], "--token-file", self.token_file,
                     "--redis", "redis://127.0.0.1:%d" % REDIS_PORT)
        self.lab.wait("server %d linked to Redis" % (i + 1),
                      lambda: self.cluster(i).get("redisLink") == "up", 15)

    def start_node(self, n, servers, extra=""):
        key = os.path.join(self.lab.tmp, "%s.key" % n.lower())
        if n not in self.lab.ids:
            r = subprocess.run([self.lab.bin, "keygen", "--out", key], capture_output=True,
                               text=True, timeout=20)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.lab.ids[n] = r.stdout.strip().splitlines()[-1].strip()
        cfg = os.path.join(self.lab.tmp, "node%s.toml" % n)
        listed = ", ".join('"%s"' % SERVERS[i] for i in servers)
        with open(cfg, "w") as f:
            f.write("""[node]
key = "%s"
[signal]
server = [%s]
token = "%s"
backoff_first = "500ms"
[ice]
stun = ["%s"]
turn = [{ server = "%s", user = "%s", password = "%s" }]
[admin]
listen = "%s"
[debug]
test_resources = true
[log]
level = "info"
%s""" % (key, listed, self.lab.token, TURN, TURN, TURN_USER, TURN_PASS, NODE_ADMIN, extra))
        self.lab.lab("spawn", "host" + n, "node" + n, self.lab.bin, "node", "--config", cfg)

    def node_status(self, n):
        return self.lab.status("host" + n)

    def pump(self, n, peer, nbytes):
        code, r = self.lab.http("host" + n, NODE_ADMIN,
                                "/v1/debug/pump/%s?resource=echo&bytes=%d&streams=1"
                                % (peer, nbytes), timeout=120)
        self.assertEqual(code, 200, r)
        self.assertEqual(r["error"], "")
        self.assertEqual(r["received"], nbytes)
        self.assertEqual(r["sentSha256"], r["receivedSha256"])
        return r

    def dump(self):
        for name in ("signal1", "signal2", "nodeA", "nodeB", "redis"):
            try:
                with open(self.lab.state_file(name + ".log")) as f:
                    lines = f.read().splitlines()[-40:]
                sys.stderr.write("---- %s\n%s\n" % (name, "\n".join(lines)))
            except OSError:
                pass

    # --- the test ------------------------------------------------------------------------
    def test_two_servers_on_one_redis(self):
        try:
            self.run_cluster()
        except BaseException:
            self.dump()
            raise

    def run_cluster(self):
        lab = self.lab
        lab.lab("up", "--nat-a", "eim", "--nat-b", "eim")
        self.token_file = os.path.join(lab.tmp, "network.token")
        lab.token = "lab-token-%s" % lab.prefix
        with open(self.token_file, "w") as f:
            f.write(lab.token + "\n")
        os.chmod(self.token_file, 0o600)
        self.start_redis()
        self.start_server(0)
        self.start_node("A", [0, 1], """
[[export]]
name = "cam"
target = "127.0.0.1:9"
allow = ["*"]
""")
        lab.wait_online("A")
        self.start_server(1)
        self.start_node("B", [1])
        lab.wait_online("B")
        a, b = lab.ids["A"], lab.ids["B"]
        self.assertIn(a, self.held(0))
        self.assertIn(b, self.held(1))
        self.note("lab, Redis, two servers and two nodes up")

        # A session across the servers.
        code, body = lab.http("hostB", NODE_ADMIN, "/v1/lookup/cam")
        self.assertEqual((code, body.get("nodeIds")), (200, [a]))
        r = self.pump("B", a, 8 * MIB)
        first_session = r["session"]["sessionId"]
        self.assertGreater(int(self.cluster(1)["routedOut"]), 0)
        self.assertGreater(int(self.cluster(0)["routedIn"]), 0)
        self.note("session across the servers: 8 MiB byte-exact")

        # Redis restarts: no node is dropped, both resynchronise, a new session works.
        lab.lab("kill", "redis")
        for i in (0, 1):
            lab.wait("server %d to report Redis down" % (i + 1),
                     lambda: self.cluster(i).get("redisLink") != "up", 10)
        time.sleep(1)
        self.assertIn(a, self.held(0))
        self.assertIn(b, self.held(1))
        self.start_redis()
        for i in (0, 1):
            lab.wait("server %d back on Redis" % (i + 1),
                     lambda: self.cluster(i).get("redisLink") == "up", 20)
        lab.wait("A's presence written again",
                 lambda: self.redis_cli("GET", "p2proxy:node:" + a)
                 == self.cluster(0).get("instance"), 20)
        self.assertEqual(self.node_status("A")["signal"]["state"], "online")
        self.start_node("B", [1])  # restarted: its next session is a new one
        lab.wait_online("B")
        r = self.pump("B", a, 4 * MIB)
        session = r["session"]["sessionId"]
        self.assertNotEqual(session, first_session)
        self.note("Redis restarted: nothing dropped, a new session works")

        # Server 1 dies: A fails over to server 2 within 5 s; the session carries on.
        with open(lab.state_file("signal1.pid")) as f:
            os.kill(int(f.read().strip()), signal.SIGKILL)
        t = time.monotonic()
        lab.wait("A held by server 2", lambda: a in self.held(1), 5, period=0.1)
        took = time.monotonic() - t
        self.assertEqual(self.node_status("A")["signal"]["server"], SERVERS[1])
        r = self.pump("B", a, 4 * MIB)
        self.assertEqual(r["session"]["sessionId"], session)
        self.note("server 1 killed: A online on server 2 after %.1fs; session carried on"
                  % took)


if __name__ == "__main__":
    unittest.main()
