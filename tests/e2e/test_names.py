"""Names have owners: a node cannot take over another node's export name.

Node A exports `web` (a real HTTP server, python3 -m http.server, behind
it). Node S, the squatter, exports `web` too (its own HTTP server) and
`other`. S's key is chosen so that its node id sorts before A's: a server
that answered both ids would hand unpinned clients to S. The signaling
server must refuse S `web` alone (NAME_TAKEN, A's id) and register `other`;
node C's unpinned tcp and http listeners reach A's server; the look-up
answers A only. The binding survives a server restart (same --state-dir)
even when S logs in first; the operator's --names policy, reloaded on
SIGHUP, can let S export `web` too, and a malformed policy is refused at
start with FILE:LINE and on SIGHUP keeps the previous one. A node that
exports a name and listens for it never opens a session to itself: while
the server refuses it the name, its own client goes to the owner; once it
owns the name too, its own export serves it.
"""
import json
import os
import signal
import subprocess
import sys
import time
import unittest

from harness import (Lab, Proc, free_port, http_get, online, run, status,
                     wait_until)


def keygen(lab, name):
    """Writes NAME.key in the lab dir (as Lab.node's config expects); its id."""
    r = run(["keygen", "--out", os.path.join(lab.dir, f"{name}.key")])
    if r.returncode != 0:
        raise AssertionError(f"keygen {name} failed: {r.stderr}")
    return r.stdout.strip()


class WebServer:
    """python3 -m http.server serving one file, owner.txt, saying WHO."""

    def __init__(self, lab, who):
        root = os.path.join(lab.dir, f"www-{who}")
        os.makedirs(root)
        with open(os.path.join(root, "owner.txt"), "w") as f:
            f.write(f"served by {who}\n")
        self.port = free_port()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
             "--directory", root, str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: http_get(
            f"http://127.0.0.1:{self.port}/owner.txt")[0] == 200,
            10, f"{who}'s HTTP server")

    def close(self):
        self.p.terminate()
        self.p.wait(timeout=10)


def export(name, port):
    return (f'[[export]]\nname = "{name}"\ntarget = "127.0.0.1:{port}"\n'
            f'protocol = "tcp"\nallow = ["*"]\n')


def listen(port, protocol, resource=None):
    res = f'resource = "{resource}"\n' if resource else ""
    return (f'[[listen]]\nbind = "127.0.0.1:{port}"\n'
            f'protocol = "{protocol}"\n{res}')


def registrations(admin):
    """{export name: (registration, error, owners)} from a node's status."""
    return {e["name"]: (e["registration"], e["registrationError"],
                        list(e["owners"]))
            for e in status(admin)["exports"]}


def curl(url, timeout=20):
    r = subprocess.run(["curl", "-sS", "--max-time", str(timeout), url],
                       capture_output=True, text=True, timeout=timeout + 10)
    return r.stdout


class Names(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab()
        lab = cls.lab
        # S's id must sort first, so that today's answer (every exporter,
        # sorted) would send unpinned clients to the squatter.
        ids = sorted((keygen(lab, n), n) for n in ("key-1", "key-2"))
        (cls.s_id, s_key), (cls.a_id, a_key) = ids
        os.rename(os.path.join(lab.dir, f"{s_key}.key"),
                  os.path.join(lab.dir, "node-s.key"))
        os.rename(os.path.join(lab.dir, f"{a_key}.key"),
                  os.path.join(lab.dir, "node-a.key"))
        cls.state_dir = os.path.join(lab.dir, "state")
        cls.policy = os.path.join(lab.dir, "names.toml")
        cls.write_policy("# no name is listed: first come, first owner\n")
        cls.start_server()
        cls.web_a = WebServer(lab, "A")
        cls.web_s = WebServer(lab, "S")
        cls.a, cls.a_admin = lab.node(
            "node-a", extra=export("web", cls.web_a.port))
        wait_until(lambda: registrations(cls.a_admin).get("web", ("",))[0]
                   == "registered", 15, "A's web registered")
        cls.s_web_port = free_port()
        cls.s, cls.s_admin = lab.node(
            "node-s", extra=export("web", cls.web_s.port)
            + export("other", cls.web_s.port)
            + listen(cls.s_web_port, "tcp", "web"))
        cls.tcp_port, cls.http_port = free_port(), free_port()
        cls.c, cls.c_admin = lab.node(
            "node-c", extra=listen(cls.tcp_port, "tcp", "web")
            + listen(cls.http_port, "http"))
        for admin in (cls.s_admin, cls.c_admin):
            wait_until(lambda: online(admin), 15, "nodes online")
        cls.wait_s({"web": ("refused", "NAME_TAKEN", [cls.a_id]),
                    "other": ("registered", "", [])})

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()
        cls.web_a.close()
        cls.web_s.close()

    @classmethod
    def write_policy(cls, text):
        with open(cls.policy, "w") as f:
            f.write(text)

    @classmethod
    def start_server(cls):
        lab = cls.lab
        args = ["signal", "--listen", f"127.0.0.1:{lab.signal_port}",
                "--key", lab.server_key,
                "--token-file", os.path.join(lab.dir, "token"),
                "--admin", f"127.0.0.1:{lab.signal_admin}",
                "--state-dir", cls.state_dir, "--names", cls.policy]
        if lab.server is None:
            lab.server = lab.spawn("signal", args)
        else:
            lab.server.start()
        wait_until(lambda: http_get(
            f"http://127.0.0.1:{lab.signal_admin}/v1/status")[0] == 200,
            10, "the signaling server's admin port")

    @classmethod
    def wait_s(cls, want, timeout=15):
        wait_until(lambda: registrations(cls.s_admin) == want, timeout,
                   f"S's exports to be {want}")

    def lookup(self, admin, name):
        code, body = http_get(f"http://127.0.0.1:{admin}/v1/lookup/{name}")
        self.assertEqual(code, 200, body)
        return json.loads(body)["nodeIds"]

    def lookup_when_online(self, admin, name):
        """The look-up's ids, or None while the node is not logged in."""
        code, body = http_get(f"http://127.0.0.1:{admin}/v1/lookup/{name}")
        return json.loads(body)["nodeIds"] if code == 200 else None

    def reaches(self, port, path="/owner.txt"):
        return curl(f"http://127.0.0.1:{port}{path}")

    def test_1_the_squatter_is_refused_web_alone_and_says_so(self):
        self.assertEqual(registrations(self.s_admin), {
            "web": ("refused", "NAME_TAKEN", [self.a_id]),
            "other": ("registered", "", [])})
        self.assertEqual(registrations(self.a_admin),
                         {"web": ("registered", "", [])})
        # The server's status lists the refusal too.
        nodes = {n["nodeId"]: n for n in json.loads(http_get(
            f"http://127.0.0.1:{self.lab.signal_admin}/v1/status")[1])["nodes"]}
        self.assertEqual(nodes[self.s_id]["exports"], ["other"])
        self.assertEqual(nodes[self.s_id]["refused"], ["web"])
        log = self.s.log_text()
        self.assertIn("refuses export 'web': NAME_TAKEN", log)
        self.assertIn(self.a_id, log)
        # The `status` command shows it too.
        r = run(["status", "--admin", f"127.0.0.1:{self.s_admin}", "--json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        exports = {e["name"]: e for e in json.loads(r.stdout)["exports"]}
        self.assertEqual(exports["web"]["registration"], "refused")
        self.assertEqual(exports["web"]["owners"], [self.a_id])

    def test_2_unpinned_listeners_reach_the_owner(self):
        self.assertEqual(self.lookup(self.c_admin, "web"), [self.a_id])
        self.assertEqual(self.lookup(self.c_admin, "other"), [self.s_id])
        for _ in range(3):
            self.assertEqual(self.reaches(self.tcp_port), "served by A\n")
            self.assertEqual(self.reaches(self.http_port, "/r/web/owner.txt"),
                             "served by A\n")
        # S's own client for web goes to the owner as well.
        self.assertEqual(self.reaches(self.s_web_port), "served by A\n")

    def test_3_a_restart_keeps_the_owner_even_if_the_squatter_comes_first(self):
        lab = self.lab
        self.a.stop()
        lab.server.stop()
        self.assertTrue(os.path.exists(os.path.join(self.state_dir,
                                                    "owners.toml")))
        logins = status(self.s_admin)["signal"]["loginsCount"]
        self.start_server()
        wait_until(lambda: status(self.s_admin)["signal"]["loginsCount"]
                   > logins, 40, "S logged in again")
        self.wait_s({"web": ("refused", "NAME_TAKEN", [self.a_id]),
                     "other": ("registered", "", [])})
        wait_until(lambda: self.lookup_when_online(self.c_admin, "web") == [],
                   40, "C online again, and nobody to serve web")
        self.a.start()
        wait_until(lambda: registrations(self.a_admin).get("web", ("",))[0]
                   == "registered", 15, "A's web registered again")
        wait_until(lambda: self.lookup_when_online(self.c_admin, "web")
                   == [self.a_id], 10, "C finds A for web")
        self.assertEqual(self.reaches(self.tcp_port), "served by A\n")

    def test_4_the_policy_lets_both_export_and_sighup_reloads_it(self):
        server = self.lab.server
        self.write_policy(f'[names]\nweb = ["{self.a_id}", "{self.s_id}"]\n')
        server.p.send_signal(signal.SIGHUP)
        self.wait_s({"web": ("registered", "", []),
                     "other": ("registered", "", [])})
        self.assertEqual(registrations(self.a_admin),
                         {"web": ("registered", "", [])})
        self.assertEqual(self.lookup(self.c_admin, "web"),
                         sorted([self.a_id, self.s_id]))
        # S now owns web too: its own client is served by its own export
        # (the LOCAL SESSION: no session to itself), and its look-up lists it
        # first, then the other owner.
        self.assertEqual(self.lookup(self.s_admin, "web"), [self.s_id,
                                                            self.a_id])
        self.assertEqual(self.reaches(self.s_web_port), "served by S\n")
        # A malformed file keeps the policy in force, with FILE:LINE logged.
        self.write_policy(f'[names]\nweb = ["{self.a_id}"]\nbad = "x"\n')
        server.p.send_signal(signal.SIGHUP)
        wait_until(lambda: "keeps the previous names policy" in
                   server.log_text(), 10, "the reload error logged")
        self.assertIn(f"{self.policy}:3:", server.log_text())
        self.assertTrue(server.alive())
        time.sleep(0.5)
        self.assertEqual(registrations(self.s_admin)["web"],
                         ("registered", "", []))
        # A good file again: the move to A alone reaches S without a restart.
        self.write_policy(f'[names]\nweb = ["{self.a_id}"]\n')
        server.p.send_signal(signal.SIGHUP)
        self.wait_s({"web": ("refused", "NAME_TAKEN", [self.a_id]),
                     "other": ("registered", "", [])})

    def test_5_a_malformed_policy_is_refused_at_start(self):
        bad = os.path.join(self.lab.dir, "bad-names.toml")
        with open(bad, "w") as f:
            f.write('[names]\nweb = ["not-a-node-id"]\n')
        r = run(["signal", "--listen", f"127.0.0.1:{free_port()}",
                 "--key", os.path.join(self.lab.dir, "signal2.key"),
                 "--state-dir", os.path.join(self.lab.dir, "state2"),
                 "--names", bad], timeout=10)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{bad}:2:", r.stderr)


if __name__ == "__main__":
    unittest.main()
