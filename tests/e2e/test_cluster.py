"""Two signaling servers on one Redis (docs/cluster.md), on loopback.

A real redis-server (Debian's) is started by this test on a free loopback
port with a directory of its own and no persistence, and stopped by pid.
Both servers run with the same key and --redis. Node A knows both servers
but starts while only server 1 listens, so it is held by server 1; node B
knows server 2 only. Asserted, as a user would check them:
- a look-up and a session cross the servers: B finds A's export and a
  SHA-256-checked transfer runs over the session (offer, answer and
  candidates went through Redis);
- a squatter on server 2 cannot take the name A owns through server 1,
  unless the names policy in Redis lets it (applied by both servers);
- server 1 killed: A is online on server 2 within 5 s, the session between
  A and B is the same one and still carries data byte-exact;
- Redis restarted: both servers say so in their status, drop no node, come
  back (redis_link up) and resynchronise: a new session from a new node
  works after;
- garbage in our keys and channel (redis-cli) is ignored and logged, and
  both servers stay up.
"""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from harness import Lab, free_port, http_get, online, run, status, wait_until

MiB = 1 << 20
REDIS = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


class Redis:
    """redis-server on 127.0.0.1:PORT, in a directory of its own."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="p2proxy-redis-")
        self.port = free_port()
        self.p = None
        self.start()

    def start(self):
        self.log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.p = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.dir, "--save", "", "--appendonly", "no",
             "--daemonize", "no"],
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        wait_until(lambda: self.cli("PING") == "PONG", 10, "redis-server")

    def cli(self, *args):
        r = subprocess.run([REDIS_CLI, "-p", str(self.port), *args],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip()

    def stop(self):
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        self.p = None
        self.log.close()

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def cluster(admin):
    return status(admin).get("cluster", {})


@unittest.skipIf(REDIS is None and os.environ.get("CI") != "true",
                 "redis-server is not installed (apt-get install "
                 "redis-server); CI=true makes this a failure")
class Cluster(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.redis = Redis()
        cls.lab = lab = Lab()
        cls.url = f"redis://127.0.0.1:{cls.redis.port}"
        cls.ports = [lab.signal_port, free_port()]
        cls.admins = [lab.signal_admin, free_port()]
        cls.servers = [None, None]
        cls.start_server(0)
        cls.server_id = lab.server_id()
        extra = (f'[debug]\ntest_resources = true\n'
                 f'[[export]]\nname = "cam"\ntarget = "127.0.0.1:9"\n'
                 f'protocol = "tcp"\nallow = ["*"]\n')
        # A knows both servers; only server 1 listens yet, so A is its.
        cls.a, cls.a_admin = cls.node("node-a", [0, 1], extra)
        cls.a_id = wait_until(lambda: online(cls.a_admin), 15,
                              "node A online")["nodeId"]
        cls.start_server(1)
        cls.b, cls.b_admin = cls.node("node-b", [1],
                                      '[debug]\ntest_resources = true\n')
        cls.b_id = wait_until(lambda: online(cls.b_admin), 10,
                              "node B online")["nodeId"]

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()
        cls.redis.close()

    @classmethod
    def start_server(cls, i):
        lab = cls.lab
        cls.servers[i] = lab.spawn(f"signal{i + 1}", [
            "signal", "--listen", f"127.0.0.1:{cls.ports[i]}",
            "--key", lab.server_key, "--redis", cls.url,
            "--token-file", os.path.join(lab.dir, "token"),
            "--admin", f"127.0.0.1:{cls.admins[i]}"])
        wait_until(lambda: cluster(cls.admins[i]).get("redisLink") == "up",
                   10, f"server {i + 1} linked to Redis")

    @classmethod
    def node(cls, name, servers, extra):
        """A node whose [signal] server lists `servers` (indexes)."""
        lab = cls.lab
        admin = free_port()
        listed = ", ".join(f'"127.0.0.1:{cls.ports[i]}"' for i in servers)
        server_id = getattr(cls, "server_id", None)
        pin = f'server_id = "{server_id}"\n' if server_id else ""
        cfg = (f'[node]\nkey = "{name}.key"\n'
               f'[signal]\nserver = [{listed}]\n{pin}'
               f'token = "{lab.token}"\nbackoff_first = "500ms"\n'
               f'[admin]\nlisten = "127.0.0.1:{admin}"\n{extra}')
        path = os.path.join(lab.dir, f"{name}.toml")
        with open(path, "w") as f:
            f.write(cfg)
        return lab.spawn(name, ["node", "--config", path]), admin

    def pump(self, admin, peer, nbytes):
        code, body = http_get(
            f"http://127.0.0.1:{admin}/v1/debug/pump/{peer}"
            f"?resource=echo&bytes={nbytes}&streams=1", timeout=120)
        self.assertEqual(code, 200, body)
        r = json.loads(body)
        self.assertEqual(r["error"], "")
        self.assertEqual(r["received"], nbytes)
        self.assertEqual(r["sentSha256"], r["receivedSha256"])
        return r

    def lookup(self, admin, name):
        code, body = http_get(f"http://127.0.0.1:{admin}/v1/lookup/{name}")
        self.assertEqual(code, 200, body)
        return json.loads(body)["nodeIds"]

    def held_by(self, i):
        return {n["nodeId"] for n in status(self.admins[i])["nodes"]}

    def test_1_lookup_and_session_cross_servers(self):
        self.assertIn(self.a_id, self.held_by(0))
        self.assertIn(self.b_id, self.held_by(1))
        self.assertEqual(self.lookup(self.b_admin, "cam"), [self.a_id])
        r = self.pump(self.b_admin, self.a_id, 8 * MiB)
        self.assertIn(r["session"]["state"], ("ready", "lingering"))
        c1, c2 = cluster(self.admins[0]), cluster(self.admins[1])
        self.assertNotEqual(c1["instance"], c2["instance"])
        self.assertGreater(int(c2["routedOut"]), 0)
        self.assertGreater(int(c1["routedIn"]), 0)
        self.assertGreaterEqual(int(c1["redisLatencyUs"]), 0)
        _, metrics = http_get(f"http://127.0.0.1:{self.admins[1]}/metrics")
        self.assertIn("p2proxy_cluster_redis_up 1", metrics)
        self.assertIn("p2proxy_cluster_routed_out_total", metrics)

    def test_2_a_squatter_on_server_2_cannot_take_the_name(self):
        q, q_admin = self.node(
            "squatter", [1],
            '[[export]]\nname = "cam"\ntarget = "127.0.0.1:9"\n'
            'protocol = "tcp"\nallow = ["*"]\n')
        wait_until(lambda: online(q_admin), 10, "the squatter online")

        def refused():
            e = {x["name"]: x for x in status(q_admin)["exports"]}["cam"]
            return e if e["registration"] == "refused" else None
        e = wait_until(refused, 10, "the squatter's 'cam' refused")
        self.assertEqual(e["registrationError"], "NAME_TAKEN")
        self.assertEqual(list(e["owners"]), [self.a_id])
        self.assertEqual(self.lookup(self.b_admin, "cam"), [self.a_id])
        # The operator's names policy lives in Redis: once it lets the
        # squatter export 'cam' too, both servers apply it (and ignore an
        # entry that lists no node id).
        q_id = online(q_admin)["nodeId"]
        self.redis.cli("HSET", "p2proxy:policy", "cam",
                       f"{self.a_id},{q_id}", "junk", "not-a-node-id")
        self.redis.cli("PUBLISH", "p2proxy:all", "P")

        def registered():
            e = {x["name"]: x for x in status(q_admin)["exports"]}["cam"]
            return e["registration"] == "registered"
        wait_until(registered, 10, "the squatter's 'cam' allowed by the policy")
        self.assertEqual(self.lookup(self.b_admin, "cam"),
                         sorted([self.a_id, q_id]))
        self.assertIn("p2proxy:policy junk",
                      self.servers[0].log_text() + self.servers[1].log_text())
        # Policy gone: the name is A's again (its owner in Redis).
        self.redis.cli("DEL", "p2proxy:policy")
        self.redis.cli("PUBLISH", "p2proxy:all", "P")
        wait_until(refused, 10, "the squatter's 'cam' refused again")
        self.assertEqual(self.lookup(self.b_admin, "cam"), [self.a_id])
        q.stop()

    def test_3_garbage_in_our_keys_is_ignored_and_logged(self):
        bogus = "b" * 52
        self.redis.cli("SET", f"p2proxy:node:{bogus}", "\x01not-an-instance")
        self.redis.cli("SADD", "p2proxy:name:cam", bogus, "garbage!")
        self.redis.cli("SET", "p2proxy:owner:cam2", "nobody's id")
        inst = cluster(self.admins[0])["instance"]
        self.redis.cli("PUBLISH", f"p2proxy:inst:{inst}", "Zjunk")
        self.redis.cli("PUBLISH", f"p2proxy:inst:{inst}", "R" + bogus)
        self.assertEqual(self.lookup(self.b_admin, "cam"), [self.a_id])
        wait_until(lambda: int(cluster(self.admins[0])["garbageIgnored"]) >= 2,
                   5, "server 1 counts the garbage on its channel")
        self.assertGreater(int(cluster(self.admins[1])["garbageIgnored"]), 0)
        for s in self.servers:
            self.assertTrue(s.alive())
        log = self.servers[1].log_text()
        self.assertIn("ignores a value in Redis that is not ours", log)
        self.redis.cli("DEL", f"p2proxy:node:{bogus}", "p2proxy:owner:cam2")

    def test_4_redis_restart_drops_no_node_and_resynchronises(self):
        self.redis.stop()
        for admin in self.admins:
            wait_until(lambda: cluster(admin)["redisLink"] != "up", 10,
                       "the status to say the Redis link is down")
        time.sleep(1)
        self.assertIn(self.a_id, self.held_by(0))
        self.assertIn(self.b_id, self.held_by(1))
        self.assertTrue(online(self.a_admin) and online(self.b_admin))
        self.redis.start()
        for admin in self.admins:
            wait_until(lambda: cluster(admin)["redisLink"] == "up", 20,
                       "the Redis link back up")
        # Redis came back empty: the servers wrote their nodes again.
        wait_until(lambda: self.redis.cli("GET", f"p2proxy:node:{self.a_id}")
                   == cluster(self.admins[0])["instance"], 10,
                   "A's presence written again")
        self.assertEqual(self.redis.cli("GET", "p2proxy:owner:cam"), self.a_id)
        c, c_admin = self.node("node-c", [1],
                               '[debug]\ntest_resources = true\n')
        wait_until(lambda: online(c_admin), 10, "node C online")
        self.assertEqual(self.lookup(c_admin, "cam"), [self.a_id])
        self.pump(c_admin, self.a_id, 2 * MiB)
        c.stop()

    def test_5_server_1_killed_the_node_fails_over_and_the_session_lives(self):
        r = self.pump(self.b_admin, self.a_id, MiB)
        session = r["session"]["sessionId"]
        self.servers[0].kill()
        t0 = time.monotonic()
        wait_until(lambda: self.a_id in self.held_by(1), 5,
                   "node A online on server 2")
        took = time.monotonic() - t0
        self.assertLess(took, 5)
        self.assertEqual(online(self.a_admin)["signal"]["server"],
                         f"127.0.0.1:{self.ports[1]}")
        r = self.pump(self.b_admin, self.a_id, 4 * MiB)
        self.assertEqual(r["session"]["sessionId"], session)
        self.assertEqual(self.lookup(self.b_admin, "cam"), [self.a_id])


if __name__ == "__main__":
    unittest.main()
