"""Relays configured once, on the signaling server, and `p2proxy netcheck` (issue #13, items 4
and 5), in the network lab (deploy/lab/lab.sh, one prefix per lab).

pub runs coturn in `use-auth-secret` mode (TURN REST credentials) on 198.18.0.1:3478 and
`p2proxy signal --stun-ports 198.18.0.1:3479,198.18.0.10:3480 --turn 198.18.0.1:3478
--turn-secret-file F`; the nodes' configurations have no [ice] section.

test_server_relays (sym x sym):
  - both nodes log that the server handed them 1 STUN and 1 TURN server with credentials;
  - a client behind B reads A's banner and sends 1 MiB through the tunnel; both nodes' session
    rows are relayed through coturn, and coturn's log shows allocations made with the minted
    usernames of both nodes ("<expiry>:<node id>");
  - node A restarted with its own [ice] turn (a second coturn on 198.18.0.10 with a static user)
    opens its next session through that one, never through the server's;
  - netcheck from A against a second signaling server whose secret differs from coturn's
    reports the relay as refusing the credentials (401) in words a user can act on, and the
    same against a third whose coturn's clock runs two days ahead (libfaketime), for which
    the minted credentials have expired;
  - netcheck on a symmetric NAT: UDP works, mapping endpoint-dependent, relay available.
test_netcheck_none_eim / test_netcheck_blocked: netcheck --json on hosts behind no NAT
  (public address = the host's own), an endpoint-independent NAT (the NAT's WAN address, same
  mapping for both server addresses) and a router that drops UDP (udp blocked, mapping unknown,
  relay only over TCP), with the human output's key lines checked too.

Needs root; not root: skips, except under CI=true, where it fails.

    cd tests/lab && CI=true P2PROXY_BIN=../../build/p2proxy python3 -m unittest -v test_relays
"""
import itertools
import json
import os
import subprocess
import sys
import time
import unittest

import natlab

_counter = itertools.count()

PUB_IP, PUB_IP2 = natlab.PUB_IP, natlab.PUB_IP2
SIGNAL_ADDR = natlab.SIGNAL_ADDR          # 198.18.0.10:7000
WRONG_SIGNAL_ADDR = "%s:7001" % PUB_IP2   # a server whose TURN secret is not coturn's
LATE_SIGNAL_ADDR = "%s:7002" % PUB_IP2    # a server whose coturn's clock is ahead
STUN_PORTS = "%s:3479,%s:3480" % (PUB_IP, PUB_IP2)
TURN = "%s:3478" % PUB_IP
OWN_TURN = "%s:3478" % PUB_IP2            # node A's own [ice] relay (static user)
OWN_USER, OWN_PASS = "own", "own-secret"
HOST_IP = {"hostA": "198.18.1.2", "hostB": "198.18.2.2"}
NAT_WAN = {"hostA": "198.18.0.2", "hostB": "198.18.0.3"}


class RelayLab(natlab.NatLab):
    """A NatLab whose relays come from the signaling server."""

    def spawn_coturn(self, name, ip, auth, log, port=3478, wrapper=()):
        self.lab("spawn", "pub", name, *wrapper, "turnserver", "-n",
                 "--listening-ip", ip, "--relay-ip", ip, "--listening-port", str(port),
                 "--min-port", "49152", "--max-port", "49199", *auth,
                 "--realm", "p2proxy.lab", "--fingerprint", "--no-tls", "--no-dtls",
                 "--no-cli", "--no-rfc5780", "--no-software-attribute",
                 "--allowed-peer-ip=198.18.0.0-198.19.255.255",
                 "--pidfile", os.path.join(self.tmp, name + ".pid"),
                 "--userdb", os.path.join(self.tmp, name + ".db"),
                 "--log-file", log, "--simple-log", "--no-stdout-log", "-v")

        def listening():
            if not self.pid_alive(name):
                raise natlab.LabError("%s exited: %s" % (name, self.tail(log)))
            r = self.in_ns("pub", ["ss", "-Hlun", "src", "%s:%d" % (ip, port)], 10)
            return r.stdout.strip() != ""
        self.wait("%s on %s:%d" % (name, ip, port), listening, 15)

    def tail(self, path, n=30):
        try:
            with open(path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except FileNotFoundError:
            return "(no %s)" % path

    def write_secret(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text + "\n")
        os.chmod(path, 0o600)
        return path

    def start_signal(self, name, addr, secret_file, admin, stun_ports=STUN_PORTS, turn=TURN):
        self.lab("spawn", "pub", name, self.bin, "signal", "--listen", addr,
                 "--key", os.path.join(self.tmp, name + ".key"), "--admin", admin,
                 "--token-file", self.token_file, "--stun-ports", stun_ports,
                 "--turn", turn, "--turn-secret-file", secret_file)

        def up():
            if not self.pid_alive(name):
                raise natlab.LabError("%s exited: %s" % (
                    name, self.tail(self.state_file(name + ".log"))))
            return self.http("pub", admin, "/v1/status", timeout=3)[0] == 200
        self.wait("%s's admin port" % name, up, 15)

    def up(self, with_nodes=True):
        t0 = time.monotonic()
        self.lab("up", "--nat-a", self.nat_a, "--nat-b", self.nat_b, "--no-turn")
        self.token = "lab-token-%s" % self.prefix
        self.token_file = self.write_secret("network.token", self.token)
        self.coturn_log = self.state_file("coturn.log")
        self.spawn_coturn("turnrest", PUB_IP, ["--use-auth-secret",
                                               "--static-auth-secret=lab-rest-secret"],
                          self.coturn_log)
        self.start_signal("signal", SIGNAL_ADDR, self.write_secret("turn.secret",
                                                                   "lab-rest-secret"),
                          natlab.SIGNAL_ADMIN)
        if with_nodes:
            self.lab("spawn", "hostA", "banner", natlab.PY, natlab.SELF, "banner", "--bind",
                     natlab.BANNER_ADDR, "--line", self.banner_line, "--duration", "900")
            self.start_node("A", self.export_section())
            self.start_node("B", """
[[listen]]
bind = "%s"
protocol = "tcp"
resource = "%s"
""" % (natlab.LISTEN_ADDR, natlab.RESOURCE))
            for n in ("A", "B"):
                self.wait_online(n)
        return time.monotonic() - t0

    def export_section(self):
        return """
[[export]]
name = "%s"
target = "%s"
allow = ["*"]
""" % (natlab.RESOURCE, natlab.BANNER_ADDR)

    def node_config(self, n, extra, ice="", server=SIGNAL_ADDR):
        key = os.path.join(self.tmp, "%s.key" % n.lower())
        if n not in self.ids:
            r = subprocess.run([self.bin, "keygen", "--out", key], capture_output=True,
                               text=True, timeout=20)
            if r.returncode != 0:
                raise natlab.LabError("keygen: %s" % r.stderr)
            self.ids[n] = r.stdout.strip().splitlines()[-1].strip()
        cfg = os.path.join(self.tmp, "node%s-%s.toml" % (n, server.replace(":", "_")))
        with open(cfg, "w") as f:
            f.write("""[node]
key = "%s"

[signal]
server = "%s"
token_file = "%s"
%s
[admin]
listen = "%s"

[log]
level = "%s"
%s""" % (key, server, self.token_file, ice, natlab.NODE_ADMIN, self.log_level, extra))
        return cfg

    def start_node(self, n, extra, ice=""):
        cfg = self.node_config(n, extra, ice)
        self.lab("spawn", "host" + n, "node" + n, self.bin, "node", "--config", cfg)

    def netcheck(self, host, cfg, json_out=True):
        argv = [self.bin, "netcheck", "--config", cfg] + (["--json"] if json_out else [])
        r = self.in_ns(host, argv, 60)
        if r.returncode != 0:
            raise natlab.LabError("netcheck in %s failed (%d): %s%s" % (
                host, r.returncode, r.stdout, r.stderr))
        return json.loads(r.stdout) if json_out else r.stdout


class Relays(unittest.TestCase):
    def setUp(self):
        self.bin = natlab.require_lab(self, "lab relay tests", ("faketime",))

    def make_lab(self, nat_a, nat_b):
        prefix = "tr%d-%d" % (os.getpid() % 100000, next(_counter))
        lab = RelayLab(self.bin, prefix, nat_a, nat_b)
        self.addCleanup(lab.down)
        return lab

    def run_logged(self, lab, body):
        t0 = time.monotonic()
        try:
            body()
        except BaseException:
            sys.stderr.write("\n===== %s x %s (prefix %s): logs =====\n%s\n----- coturn -----\n"
                             "%s\n" % (lab.nat_a, lab.nat_b, lab.prefix, lab.logs(150),
                                       lab.tail(lab.coturn_log, 60)))
            raise
        sys.stderr.write("\n  [%s x %s: %.1f s]\n" % (lab.nat_a, lab.nat_b,
                                                      time.monotonic() - t0))

    def node_log(self, lab, n):
        with open(lab.state_file("node%s.log" % n), errors="replace") as f:
            return f.read()

    def assert_relayed(self, lab, who, row):
        self.assertIsNotNone(row, "node %s has no session row" % who)
        self.assertIn(row.get("state"), natlab.UP_STATES, "%s's session: %r" % (who, row))
        types = (row.get("localCandidateType"), row.get("remoteCandidateType"))
        self.assertIn("relay", types, "%s's path %s, expected relayed: %r" % (who, types, row))

    def check_server_relays(self, lab):
        lab.up()
        for n in ("A", "B"):
            self.assertRegex(self.node_log(lab, n),
                             r"got 1 STUN and 1 TURN server\(s\) from the server \(TURN "
                             r"credentials valid until 20\d\d-",
                             "node %s did not take the server's relays" % n)
        cold = lab.open_once()
        self.assertTrue(cold.get("connected"), "no banner through the tunnel: %r" % cold)
        warm = lab.open_once(send=natlab.PROBE_BYTES)
        self.assertTrue(warm.get("connected") and warm.get("sent") == natlab.PROBE_BYTES,
                        "the 1 MiB transfer failed: %r" % warm)
        a, b = lab.ids["A"], lab.ids["B"]
        self.assert_relayed(lab, "B", lab.session_row("hostB", a))
        self.assert_relayed(lab, "A", lab.session_row("hostA", b))
        with open(lab.coturn_log, errors="replace") as f:
            log = f.read()
        for n in ("A", "B"):
            self.assertRegex(log, r"user <\d+:%s>.*ALLOCATE processed, success" % lab.ids[n],
                             "coturn shows no allocation with node %s's minted credentials" % n)

        # Node A with its own [ice]: the next session goes through its own relay only.
        own_log = lab.state_file("coturn-own.log")
        lab.spawn_coturn("turnown", PUB_IP2, ["--lt-cred-mech", "--user",
                                              "%s:%s" % (OWN_USER, OWN_PASS)], own_log)
        # Both restart, so that the next open is a new session.
        for n in ("A", "B"):
            lab.lab("kill", "node" + n)
            lab.wait("node %s to end" % n, lambda: not lab.pid_alive("node" + n), 15)
        with open(lab.coturn_log, errors="replace") as f:
            mark = len(f.read())
        lab.start_node("A", lab.export_section(), ice="""
[ice]
stun = ["%s:3479"]
turn = [{ server = "%s", user = "%s", password = "%s" }]
""" % (PUB_IP, OWN_TURN, OWN_USER, OWN_PASS))
        lab.start_node("B", """
[[listen]]
bind = "%s"
protocol = "tcp"
resource = "%s"
""" % (natlab.LISTEN_ADDR, natlab.RESOURCE))
        for n in ("A", "B"):
            lab.wait_online(n)
        lab.wait("node B's listener", lambda: lab.in_ns(
            "hostB", ["ss", "-Hltn", "src", natlab.LISTEN_ADDR], 10).stdout.strip(), 15)
        again = lab.open_once(send=natlab.PROBE_BYTES)
        self.assertTrue(again.get("connected") and again.get("sent") == natlab.PROBE_BYTES,
                        "no transfer after A restarted with its own [ice]: %r" % again)
        with open(own_log, errors="replace") as f:
            self.assertRegex(f.read(), r"user <%s>.*ALLOCATE processed, success" % OWN_USER,
                             "node A did not use its own TURN server")
        with open(lab.coturn_log, errors="replace") as f:
            later = f.read()[mark:]
        self.assertNotRegex(later, r"user <\d+:%s>: incoming packet ALLOCATE processed, "
                                   r"success" % a,
                            "node A used the server's TURN server despite its own [ice]")

        # Wrong credentials: a server whose secret is not coturn's.
        lab.start_signal("signalwrong", WRONG_SIGNAL_ADDR,
                         lab.write_secret("wrong.secret", "not-the-secret"), "127.0.0.1:7072",
                         stun_ports="%s:3481,%s:3482" % (PUB_IP, PUB_IP2))
        res = lab.netcheck("hostA", lab.node_config("W", "", server=WRONG_SIGNAL_ADDR))
        self.assertTrue(res["signal"]["ok"], res["signal"])
        self.assertFalse(res["relay"]["available"], res["relay"])
        self.assertEqual(res["relay"]["source"], "server")
        for s in res["relay"]["servers"]:
            if s["transport"] == "udp":
                self.assertTrue(s["reachable"], s)
                self.assertEqual(s["errorCode"], 401, s)
                self.assertIn("refused the credentials", s["error"])
        text = lab.netcheck("hostA", lab.node_config("W", "", server=WRONG_SIGNAL_ADDR),
                            json_out=False)
        self.assertIn("401 Unauthorized: the relay refused the credentials", text)

        # Expired credentials: a coturn whose clock is two days ahead of the server's
        # (libfaketime) sees the minted expiry (one day) as past.
        lab.spawn_coturn("turnlate", PUB_IP2, ["--use-auth-secret",
                                               "--static-auth-secret=lab-rest-secret"],
                         lab.state_file("coturn-late.log"), port=3490,
                         wrapper=["faketime", "-f", "+2d"])
        lab.start_signal("signallate", LATE_SIGNAL_ADDR, lab.write_secret(
                             "late.secret", "lab-rest-secret"), "127.0.0.1:7073",
                         stun_ports="%s:3483,%s:3484" % (PUB_IP, PUB_IP2),
                         turn="%s:3490" % PUB_IP2)
        res = lab.netcheck("hostA", lab.node_config("L", "", server=LATE_SIGNAL_ADDR))
        self.assertTrue(res["signal"]["ok"], res["signal"])
        self.assertFalse(res["relay"]["available"], res["relay"])
        by = {s["transport"]: s for s in res["relay"]["servers"]}
        self.assertEqual(by["udp"]["errorCode"], 401, res["relay"])
        self.assertIn("or they expired", by["udp"]["error"])

        # netcheck behind a symmetric NAT, with the right server.
        res = lab.netcheck("hostB", lab.node_config("B", ""))
        self.assertEqual(res["udp"], "works", res)
        self.assertEqual(res["mapping"], "endpoint-dependent", res)
        self.assertTrue(res["behindNat"], res)
        self.assertTrue(res["relay"]["available"], res["relay"])
        paths = {p["peer"]: p["path"] for p in res["paths"]}
        self.assertIn("relayed", paths["endpoint-dependent (symmetric) NAT"], paths)

    def test_server_relays(self):
        """sym x sym, no [ice]: relayed through the server's coturn with minted credentials"""
        lab = self.make_lab("sym", "sym")
        self.run_logged(lab, lambda: self.check_server_relays(lab))

    def check_netcheck(self, lab, kinds):
        lab.up(with_nodes=False)
        for host, kind in zip(("hostA", "hostB"), kinds):
            n = host[-1]
            res = lab.netcheck(host, lab.node_config(n, ""))
            what = "%s (%s): %r" % (host, kind, res)
            self.assertTrue(res["signal"]["ok"], what)
            # Nothing pins the lab's server: netcheck says it was trusted on first use.
            self.assertRegex(res["signal"]["serverId"], r"^[0-9a-z]{8,}", what)
            self.assertIn(res["signal"]["serverTrust"], ("first use", "stored"), what)
            self.assertEqual(len(res["stun"]), 2, what)
            if kind == "udp-blocked":
                self.assertEqual(res["udp"], "blocked", what)
                self.assertEqual(res["mapping"], "unknown", what)
                self.assertEqual(res["publicAddress"], "", what)
                by = {s["transport"]: s for s in res["relay"]["servers"]}
                self.assertFalse(by["udp"]["reachable"], what)
                self.assertTrue(by["tcp"]["allocated"], what)
                self.assertTrue(res["relay"]["available"], what)
                for p in res["paths"]:
                    self.assertEqual(p["path"], "relayed (TURN over TCP)", what)
                continue
            self.assertEqual(res["udp"], "works", what)
            self.assertEqual(res["mapping"], "endpoint-independent", what)
            public_host = res["publicAddress"].rpartition(":")[0]
            if kind == "none":
                self.assertEqual(public_host, HOST_IP[host], what)
                self.assertFalse(res["behindNat"], what)
            else:
                self.assertEqual(public_host, NAT_WAN[host], what)
                self.assertTrue(res["behindNat"], what)
            self.assertEqual({s["mapped"] for s in res["stun"]}, {res["publicAddress"]}, what)
            by = {s["transport"]: s for s in res["relay"]["servers"]}
            self.assertTrue(by["udp"]["allocated"], what)
            self.assertGreater(by["udp"]["rttMs"], 0, what)
            self.assertTrue(by["udp"]["relayedAddress"].startswith(PUB_IP + ":"), what)
            paths = {p["peer"]: p["path"] for p in res["paths"]}
            self.assertEqual(paths["endpoint-independent NAT"], "direct", what)
            self.assertEqual(paths["endpoint-dependent (symmetric) NAT"],
                             "direct" if kind == "none" else "relayed (TURN over UDP)", what)
            text = lab.netcheck(host, lab.node_config(n, ""), json_out=False)
            self.assertRegex(text, r"(?m)^UDP\s+works$", text)
            self.assertRegex(text, r"(?m)^server id\s+\S+ \(.*set \[signal\] server_id to pin it\)$",
                             text)
            self.assertRegex(text, r"(?m)^mapping\s+endpoint-independent \(seen by two server "
                                   r"addresses", text)

    def test_netcheck_none_eim(self):
        """netcheck: no NAT, and an endpoint-independent NAT"""
        lab = self.make_lab("none", "eim")
        self.run_logged(lab, lambda: self.check_netcheck(lab, ("none", "eim")))

    def test_netcheck_blocked(self):
        """netcheck: a router that drops UDP"""
        lab = self.make_lab("udp-blocked", "eim")
        self.run_logged(lab, lambda: self.check_netcheck(lab, ("udp-blocked", "eim")))


if __name__ == "__main__":
    unittest.main()
