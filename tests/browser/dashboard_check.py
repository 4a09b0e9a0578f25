#!/usr/bin/env python3
"""The browser side of tests/browser/test_dashboard.py, run inside a lab host's network namespace
(`ip netns exec PREFIX-hostB python3 dashboard_check.py node ...`), where the node's admin port is
on loopback. Standard library only; prints one JSON line with what the page showed (and "error"
when a step failed), exit code 0 whenever it printed.

  dashboard_check.py get URL [--token-file F]        one GET, like tests/lab/labhttp.py
  dashboard_check.py node --admin HOST:PORT --token-file F --peer ID --resource NAME
                          --listen HOST:PORT --out DIR
      holds a client connection through the node's listener (1 MiB sent through it), loads the
      page without the token (expects the prompt), enters the token, reads the session row of
      PEER, its path class and the channel row of NAME; screenshots in DIR
  dashboard_check.py server --admin HOST:PORT --nodes ID,ID --out DIR
      loads the signaling server's page and reads its online nodes
"""
import argparse
import json
import os
import socket
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import webdriver  # noqa: E402

SINK_BYTES = 1 << 20
PAGE_TIMEOUT = 30.0


def read_token(path):
    with open(path) as f:
        return f.read().strip()


def cmd_get(a):
    out = {"status": 0, "body": None}
    t0 = time.monotonic()
    req = urllib.request.Request(a.url)
    if a.token_file:
        req.add_header("Authorization", "Bearer " + read_token(a.token_file))
    raw = None
    try:
        with urllib.request.urlopen(req, timeout=a.timeout) as r:
            out["status"], raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        out["status"], raw = e.code, e.read()
    except Exception as e:  # no HTTP answer at all
        out["error"] = "%s: %s" % (type(e).__name__, e)
    if raw is not None:
        text = raw.decode("utf-8", "replace")
        try:
            out["body"] = json.loads(text)
        except ValueError:
            out["body"] = text
    out["seconds"] = round(time.monotonic() - t0, 3)
    print(json.dumps(out), flush=True)


def hold_channel(listen, timeout=40.0):
    """A client of the node's listener: reads the banner, sends 1 MiB to the banner server
    (which answers "got N"), and keeps the connection open. Returns (socket, banner)."""
    host, port = listen.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.settimeout(timeout)
    buf = b""
    while b"\n" not in buf:
        chunk = s.recv(1024)
        if not chunk:
            raise RuntimeError("the listener closed before the banner arrived")
        buf += chunk
    banner = buf.split(b"\n")[0].decode()
    s.sendall(b"SINK %d\n" % SINK_BYTES + b"x" * SINK_BYTES)
    got = b""
    while b"\n" not in got:
        chunk = s.recv(1024)
        if not chunk:
            raise RuntimeError("the connection closed before the sink answered")
        got += chunk
    if got.strip() != b"got %d" % SINK_BYTES:
        raise RuntimeError("the sink answered %r" % got)
    return s, banner


class Trickle(threading.Thread):
    """Keeps sending to the held connection (32 KiB every 0.1 s, the banner server drops it)
    so the page has a throughput to draw; stops when told or after `limit` seconds."""

    def __init__(self, sock, limit=180.0):
        super().__init__(daemon=True)
        self.sock, self.limit = sock, limit
        self.stop = threading.Event()
        self.sent = 0

    def run(self):
        chunk = b"y" * 32768
        deadline = time.monotonic() + self.limit
        try:
            while not self.stop.wait(0.1) and time.monotonic() < deadline:
                self.sock.sendall(chunk)
                self.sent += len(chunk)
        except OSError:
            pass


def rows(b, css):
    """The text of every cell of the rows matching css, and their data- attributes."""
    return b.execute("""
        return Array.from(document.querySelectorAll(arguments[0])).map((tr) => ({
          data: Object.assign({}, tr.dataset),
          cells: Array.from(tr.cells).map((td) => td.textContent.trim()),
        }));""", css)


def page_state(b):
    return b.execute("""
        const v = (id) => { const e = document.getElementById(id); return !!e && !e.hidden; };
        return {auth: v('auth'), node: v('node-view'), server: v('server-view'),
                authMessage: document.getElementById('auth-message').textContent,
                error: v('error') ? document.getElementById('error').textContent : '',
                updated: document.getElementById('updated').textContent,
                title: document.title};""")


def cmd_node(a):
    res = {"steps": []}
    conn = None
    trickle = None
    base = "http://%s/" % a.admin
    token = read_token(a.token_file)
    try:
        conn, res["banner"] = hold_channel(a.listen)
        res["steps"].append("channel held")
        trickle = Trickle(conn)
        trickle.start()
        with webdriver.Chrome(a.out) as b:
            res["steps"].append("browser started")
            # 1. no token: the page loads and asks for it, and shows no data
            b.get(base)
            b.wait("the token prompt", lambda: page_state(b)["auth"], PAGE_TIMEOUT)
            res["without_token"] = page_state(b)
            res["without_token"]["sessionRows"] = len(rows(b, "#sessions tr.session"))
            res["without_token"]["statusCode"] = b.execute(
                "return fetch('/v1/status').then((r) => r.status);")
            b.screenshot(os.path.join(a.out, "dashboard-no-token.png"))
            res["steps"].append("prompt shown")
            # 2. the token typed into the prompt: the data appears
            b.send_keys(b.find_all("#token")[0], token)
            b.click(b.find_all("#auth-submit")[0])
            sel = '#sessions tr.session[data-peer="%s"]' % a.peer

            def session_up():
                r = rows(b, sel)
                return r and r[0]["data"].get("path") not in ("", "none") and r
            res["session_rows"] = b.wait("the session row of the peer", session_up, PAGE_TIMEOUT)
            res["path_class_cell"] = b.execute(
                "return document.querySelector(arguments[0] + ' td.path-class').textContent;", sel)
            csel = '#channels tr.channel[data-resource="%s"]' % a.resource
            res["channel_rows"] = b.wait("the channel row", lambda: rows(b, csel), PAGE_TIMEOUT)
            res["channel_in_text"] = b.execute(
                "return document.querySelector(arguments[0] + ' td.channel-in').textContent;", csel)
            # the chart has drawn rates once two polls have come in, and shows the trickle
            b.wait("the throughput chart", lambda: b.execute(
                "return document.querySelectorAll('#chart polyline').length;") >= 2, PAGE_TIMEOUT)
            b.wait("a rate above zero", lambda: "in 0 B/s" not in b.execute(
                "return document.getElementById('rate-now').textContent;"), PAGE_TIMEOUT)
            res["rate_now"] = b.execute("return document.getElementById('rate-now').textContent;")
            time.sleep(4)  # a few more points for the screenshot
            res["channel_rows"] = rows(b, csel)
            res["channel_in_text"] = b.execute(
                "return document.querySelector(arguments[0] + ' td.channel-in').textContent;", csel)
            res["with_token"] = page_state(b)
            res["signal_rows"] = rows(b, "#signal tr")
            res["listener_rows"] = rows(b, "#listeners tr.listener")
            res["session_path_history"] = b.execute(
                "return document.querySelector(arguments[0] + ' .path-history').textContent;", sel)
            res["screenshot"] = os.path.join(a.out, "dashboard.png")
            b.screenshot(res["screenshot"])
            res["steps"].append("data shown")
            # 3. a wrong token in the URL fragment: asked again, and the fragment is gone
            b.get(base + "#token=not-the-token")
            b.wait("the prompt after a wrong token",
                   lambda: page_state(b)["auth"] and "refused" in page_state(b)["authMessage"],
                   PAGE_TIMEOUT)
            res["wrong_token"] = page_state(b)
            res["wrong_token"]["sessionRows"] = len(rows(b, "#sessions tr.session"))
            res["wrong_token"]["href"] = b.execute("return location.href;")
            # 4. the right one in the fragment: data again
            b.get(base + "#token=" + token)
            b.wait("the session row with the fragment's token",
                   lambda: page_state(b)["node"] and not page_state(b)["auth"] and rows(b, sel),
                   PAGE_TIMEOUT)
            res["fragment_token"] = page_state(b)
            res["fragment_token"]["href"] = b.execute("return location.href;")
            res["steps"].append("fragment checked")
    except Exception as e:  # reported to the test, which fails with it
        res["error"] = "%s: %s" % (type(e).__name__, e)
        res["trace"] = traceback.format_exc()[-2000:]
    finally:
        if trickle is not None:
            trickle.stop.set()
            trickle.join(5)
        if conn is not None:
            conn.close()
    print(json.dumps(res), flush=True)


def cmd_server(a):
    res = {"steps": []}
    try:
        with webdriver.Chrome(a.out) as b:
            b.get("http://%s/" % a.admin)
            want = [n for n in a.nodes.split(",") if n]

            def all_listed():
                r = rows(b, "#nodes tr.online-node")
                have = {x["data"].get("node") for x in r}
                return all(n in have for n in want) and r
            res["node_rows"] = b.wait("the online nodes", all_listed, PAGE_TIMEOUT)
            res["state"] = page_state(b)
            res["screenshot"] = os.path.join(a.out, "signal-server.png")
            b.screenshot(res["screenshot"])
    except Exception as e:
        res["error"] = "%s: %s" % (type(e).__name__, e)
        res["trace"] = traceback.format_exc()[-2000:]
    print(json.dumps(res), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("get")
    g.add_argument("url")
    g.add_argument("--token-file")
    g.add_argument("--timeout", type=float, default=10.0)
    n = sub.add_parser("node")
    n.add_argument("--admin", required=True)
    n.add_argument("--token-file", required=True)
    n.add_argument("--peer", required=True)
    n.add_argument("--resource", required=True)
    n.add_argument("--listen", required=True)
    n.add_argument("--out", required=True)
    s = sub.add_parser("server")
    s.add_argument("--admin", required=True)
    s.add_argument("--nodes", required=True)
    s.add_argument("--out", required=True)
    a = p.parse_args()
    {"get": cmd_get, "node": cmd_node, "server": cmd_server}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
