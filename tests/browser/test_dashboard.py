"""The admin dashboard in a real browser (Debian's chromium, driven by chromium-driver over the
W3C WebDriver HTTP API; tests/browser/webdriver.py), on a live node pair in the network lab
(tests/lab/natlab.py: signaling server and coturn in pub, node A behind an EIM NAT exporting a
banner server as `banner`, node B behind another with a tcp listener for it).

Node B's admin port has a bearer token. Inside hostB's namespace a client holds a connection
through B's listener (1 MiB sent through it), and the browser loads B's page: without the token
it shows the prompt and no data; with it, the session row of node A with its path class
(`direct`: EIM on both sides), and the channel row of `banner` with its bytes. Then the
signaling server's page lists both nodes and A's name. Screenshots are saved in
$P2PROXY_ARTIFACTS (ctest: BUILD/artifacts/browser), their paths printed.

Needs root (network namespaces), chromium and chromium-driver (deploy/install-deps.sh). Not root
or missing tools: skips, except under CI=true, where it fails.

    cd tests/browser && P2PROXY_BIN=../../build/p2proxy python3 -m unittest -v test_dashboard
"""
import json
import os
import re
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lab"))
import natlab  # noqa: E402
import webdriver  # noqa: E402

CHECK = os.path.join(HERE, "dashboard_check.py")
CHECK_TIMEOUT = 240


class TokenLab(natlab.NatLab):
    """natlab's pair, with a bearer token on node B's admin port (still on loopback)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.admin_token_file = os.path.join(self.tmp, "adminB.token")
        with open(self.admin_token_file, "w") as f:
            f.write("dash-%s-%s\n" % (self.prefix, os.urandom(6).hex()))
        os.chmod(self.admin_token_file, 0o600)

    def start_node(self, n, extra):
        """natlab's node, with `token_file` in B's [admin] table (a TOML table cannot be
        reopened, so the config is written here rather than appended to)."""
        if n != "B":
            return super().start_node(n, extra)
        key = os.path.join(self.tmp, "b.key")
        r = subprocess.run([self.bin, "keygen", "--out", key], capture_output=True, text=True,
                           timeout=20)
        if r.returncode != 0:
            raise natlab.LabError("keygen: %s" % r.stderr)
        self.ids[n] = r.stdout.strip().splitlines()[-1].strip()
        cfg = os.path.join(self.tmp, "nodeB.toml")
        with open(cfg, "w") as f:
            f.write("""[node]
key = "%s"

[signal]
server = "%s"
token = "%s"

[ice]
stun = ["%s"]
turn = [{ server = "%s", user = "%s", password = "%s" }]

[admin]
listen = "%s"
token_file = "%s"

[log]
level = "%s"
%s""" % (key, natlab.SIGNAL_ADDR, self.token, natlab.TURN, natlab.TURN, natlab.TURN_USER,
         natlab.TURN_PASS, natlab.NODE_ADMIN, self.admin_token_file, self.log_level, extra))
        self.lab("spawn", "hostB", "nodeB", self.bin, "node", "--config", cfg)

    def http(self, host, addr, path, timeout=10.0):
        argv = [natlab.PY, CHECK, "get", "http://%s%s" % (addr, path), "--timeout", str(timeout)]
        if host == "hostB":
            argv += ["--token-file", self.admin_token_file]
        r = self.in_ns(host, argv, timeout + 20)
        res = natlab.last_json(r.stdout)
        if res is None:
            raise natlab.LabError("dashboard_check get printed nothing: %s" % r.stderr)
        body = res.get("body")
        if res["status"] == 0:
            body = {"error": res.get("error", "no answer")}
        return res["status"], body


def artifacts_dir():
    d = os.environ.get("P2PROXY_ARTIFACTS", "")
    if not d:
        b = natlab.find_binary()
        d = os.path.join(os.path.dirname(b) if b else HERE, "artifacts", "browser")
    os.makedirs(d, exist_ok=True)
    return d


class DashboardInBrowser(unittest.TestCase):
    def setUp(self):
        missing = []
        if not webdriver.chromium_path():
            missing.append("chromium")
        if not webdriver.driver_path():
            missing.append("chromedriver (chromium-driver)")
        self.bin = natlab.require_lab(self, "the browser test (it runs in the network lab)",
                                      missing=missing)
        self.out = artifacts_dir()

    def note(self, msg):
        sys.stderr.write("  [dashboard] %s\n" % msg)
        sys.stderr.flush()

    def in_ns(self, lab, host, argv):
        r = lab.in_ns(host, [natlab.PY, CHECK] + argv, CHECK_TIMEOUT)
        res = natlab.last_json(r.stdout)
        self.assertIsNotNone(res, "dashboard_check printed nothing: %s" % r.stderr[-3000:])
        if res.get("error"):
            self.fail("in the browser (%s): %s\n%s\nsteps done: %s" % (
                host, res["error"], res.get("trace", ""), res.get("steps")))
        return res

    def test_dashboard_of_a_live_pair(self):
        t0 = time.monotonic()
        prefix = "br%d" % (os.getpid() % 100000)
        lab = TokenLab(self.bin, prefix, "eim", "eim", log=self.note, log_level="info")
        try:
            self._run(lab, t0)
        except BaseException:
            self.note("lab logs:\n" + lab.logs())
            raise
        finally:
            lab.down()
            self.note("total %.1fs (lab up to down)" % (time.monotonic() - t0))

    def _run(self, lab, t0):
        up = lab.up()
        self.note("lab up, nodes online: %.1fs" % up)
        a, b = lab.ids["A"], lab.ids["B"]
        expected = natlab.coarse(natlab.expected_class("eim", "eim"))  # "direct"

        # the token is needed: without it the status is closed, with it open
        code, _ = natlab.NatLab.http(lab, "hostB", natlab.NODE_ADMIN, "/v1/status")
        self.assertEqual(code, 401, "node B's status without the token")

        out = os.path.join(self.out, "node")
        os.makedirs(out, exist_ok=True)
        t = time.monotonic()
        res = self.in_ns(lab, "hostB", ["node", "--admin", natlab.NODE_ADMIN,
                                        "--token-file", lab.admin_token_file, "--peer", a,
                                        "--resource", natlab.RESOURCE,
                                        "--listen", natlab.LISTEN_ADDR, "--out", out])
        self.note("node page checked in %.1fs" % (time.monotonic() - t))
        self.assertEqual(res["banner"], lab.banner_line)

        # without the token: the prompt, no data
        nt = res["without_token"]
        self.assertTrue(nt["auth"], "no token prompt: %r" % nt)
        self.assertFalse(nt["node"], "node data shown without the token: %r" % nt)
        self.assertEqual(nt["sessionRows"], 0, "session rows without the token: %r" % nt)
        self.assertEqual(nt["statusCode"], 401, "/v1/status from the page without the token")

        # with the token: the node, its session to A with the path class, the channel
        wt = res["with_token"]
        self.assertTrue(wt["node"] and not wt["auth"], "no data with the token: %r" % wt)
        self.assertEqual(wt["error"], "", "the page shows an error: %r" % wt)
        self.assertIn(b[:8], wt["title"], "page title names node B: %r" % wt)
        row = res["session_rows"][0]
        self.assertEqual(row["data"]["peer"], a)
        self.assertEqual(res["path_class_cell"], expected,
                         "path class shown for the session: %r" % row)
        self.assertIn(row["cells"][1], ("ready", "lingering"), "session state: %r" % row)
        hist = res["session_path_history"]
        # The session's first pair, of the class shown, and no change since.
        self.assertTrue(hist == "no changes" or hist.startswith("first pair "),
                        "path history: %r" % hist)
        self.assertEqual("relay " in hist, expected == "relay", "path history: %r" % hist)
        ch = res["channel_rows"][0]
        self.assertEqual(ch["cells"][0], "client", "channel side: %r" % ch)
        self.assertEqual(ch["cells"][1], natlab.RESOURCE)
        self.assertIn(ch["cells"][4], ("connected", "half-closed"), "channel state: %r" % ch)
        # the 1 MiB the client sent, and what it trickles since, was read from its socket
        m = re.match(r"^(\d+(?:\.\d+)?) MiB$", res["channel_in_text"])
        self.assertTrue(m and float(m.group(1)) >= 1.0, "channel bytes in: %r" % ch)
        self.assertRegex(res["rate_now"], r"^now: in \d", "throughput: %r" % res["rate_now"])
        sig = {r["cells"][0]: r["cells"][1] for r in res["signal_rows"]}
        self.assertEqual(sig.get("state"), "online", "signal link: %r" % sig)
        self.assertEqual(sig.get("server"), natlab.SIGNAL_ADDR)
        ls = res["listener_rows"]
        self.assertEqual([r["cells"][0] for r in ls], [natlab.LISTEN_ADDR], "listeners: %r" % ls)
        self.assertGreaterEqual(int(ls[0]["cells"][3]), 1, "listener accepted: %r" % ls)

        # a wrong token from the URL fragment is refused, and the fragment leaves the address
        wr = res["wrong_token"]
        self.assertTrue(wr["auth"] and not wr["node"], "wrong token: %r" % wr)
        self.assertEqual(wr["sessionRows"], 0, "data left in the page after a wrong token")
        self.assertNotIn("#", wr["href"], "the token stayed in the address bar: %r" % wr)
        ft = res["fragment_token"]
        self.assertTrue(ft["node"] and not ft["auth"], "token from the fragment: %r" % ft)
        self.assertNotIn("token", ft["href"])

        # the signaling server's page lists both nodes and A's name
        sout = os.path.join(self.out, "signal")
        os.makedirs(sout, exist_ok=True)
        srv = self.in_ns(lab, "pub", ["server", "--admin", natlab.SIGNAL_ADMIN,
                                      "--nodes", "%s,%s" % (a, b), "--out", sout])
        byid = {r["data"]["node"]: r["cells"] for r in srv["node_rows"]}
        self.assertEqual(set(byid), {a, b}, "online nodes: %r" % byid)
        self.assertEqual(byid[a][3], natlab.RESOURCE, "A's names: %r" % byid[a])
        self.assertTrue(srv["state"]["server"], "server view: %r" % srv["state"])

        for p in (os.path.join(out, "dashboard-no-token.png"), res["screenshot"],
                  srv["screenshot"]):
            self.assertGreater(os.path.getsize(p), 5000, "screenshot %s" % p)
            self.note("screenshot: %s" % p)
        print(json.dumps({"screenshots": [res["screenshot"], srv["screenshot"]]}))


if __name__ == "__main__":
    unittest.main()
