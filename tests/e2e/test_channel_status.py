"""What a user watching `p2proxy status` and /metrics sees of channels: an
open channel is listed on both nodes (client and export side, under its
session too) with its resource, addresses and bytes; once it closes it is
gone, counted as ended, and its bytes stay in the totals."""
import os
import socket
import threading
import time
import unittest

from harness import Lab, free_port, http_get, online, status, wait_until


class Source:
    """A real TCP server on loopback: sends `size` bytes to each client as
    fast as the client reads, then closes."""

    def __init__(self, size):
        self.size = size
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.sock.settimeout(0.5)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self.send, args=(conn,), daemon=True).start()

    def send(self, conn):
        chunk = b"x" * 65536
        left = self.size
        try:
            with conn:
                conn.settimeout(60)
                while left > 0:
                    n = conn.send(chunk[:min(left, len(chunk))])
                    left -= n
        except OSError:
            pass

    def close(self):
        self.stop = True
        self.sock.close()


def metric(admin_port, name, labels):
    code, body = http_get(f"http://127.0.0.1:{admin_port}/metrics")
    if code != 200:
        raise AssertionError(f"/metrics answered {code}")
    want = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in body.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return None


class ChannelStatus(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab()
        cls.lab.start_server()
        cls.source = Source(8 << 20)
        cls.a, cls.a_admin = cls.lab.node(
            "node-a",
            extra='[session]\nidle_linger = "4s"\n'
                  f'[[export]]\nname = "src"\ntarget = "127.0.0.1:{cls.source.port}"\n'
                  f'protocol = "tcp"\nallow = ["*"]\n')
        cls.port = free_port()
        cls.b, cls.b_admin = cls.lab.node(
            "node-b",
            extra='[session]\nidle_linger = "4s"\n'
                  f'[[listen]]\nbind = "127.0.0.1:{cls.port}"\nprotocol = "tcp"\n'
                  f'resource = "src"\n')
        wait_until(lambda: online(cls.a_admin), 10, "node A online")
        wait_until(lambda: online(cls.b_admin), 10, "node B online")

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()
        cls.source.close()

    def test_open_channel_is_listed_then_counted_when_closed(self):
        a_id = status(self.a_admin)["nodeId"]
        b_id = status(self.b_admin)["nodeId"]
        client = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        try:
            # Read a little, then stop reading: the channel stays open.
            got = b""
            while len(got) < 100_000:
                got += client.recv(65536)
            local = "127.0.0.1:%d" % client.getsockname()[1]

            def client_channel():
                st = status(self.b_admin)
                chans = [c for c in st.get("channels", []) if c["side"] == "client"]
                return (st, chans) if chans else None
            st, chans = wait_until(client_channel, 10, "the client channel on node B")
            self.assertEqual(len(chans), 1, chans)
            c = chans[0]
            self.assertEqual(c["resource"], "src")
            self.assertEqual(c["client"], local)
            self.assertEqual(c["peer"], a_id)
            self.assertEqual(c["state"], "connected")
            self.assertGreaterEqual(int(c["bytesOut"]), 100_000)
            sessions = st["sessions"]["sessions"]
            self.assertEqual(len(sessions), 1)
            self.assertEqual([x["resource"] for x in sessions[0].get("channels", [])], ["src"])
            self.assertGreater(int(st["process"]["openFds"]), 0)
            self.assertGreater(int(st["process"]["runningActors"]), 0)
            self.assertGreater(int(st["process"]["rssBytes"]), 0)

            def export_channel():
                chans = [c for c in status(self.a_admin).get("channels", [])
                         if c["side"] == "export"]
                return chans or None
            ex = wait_until(export_channel, 10, "the export channel on node A")
            self.assertEqual(len(ex), 1, ex)
            self.assertEqual(ex[0]["peer"], b_id)
            self.assertEqual(ex[0]["target"], f"127.0.0.1:{self.source.port}")
            self.assertGreaterEqual(int(ex[0]["bytesIn"]), 100_000)

            self.assertEqual(metric(self.b_admin, "p2proxy_channels_open", {"side": "client"}), 1)
            self.assertEqual(metric(self.a_admin, "p2proxy_channels_open", {"side": "export"}), 1)
        finally:
            client.close()

        def gone(admin):
            st = status(admin)
            return st if not st.get("channels") else None
        st = wait_until(lambda: gone(self.b_admin), 40, "node B's channel to end")
        self.assertEqual(int(st["channelsOpened"]), 1)
        self.assertGreaterEqual(int(st["channelBytesOut"]), 100_000)
        wait_until(lambda: gone(self.a_admin), 40, "node A's channel to end")
        self.assertEqual(metric(self.b_admin, "p2proxy_channels_open", {"side": "client"}), 0)
        self.assertEqual(metric(self.b_admin, "p2proxy_channels_ended_total", {"result": "ok"}), 1)
        self.assertEqual(metric(self.b_admin, "p2proxy_listener_accepted_total",
                                {"listener": f"127.0.0.1:{self.port}"}), 1)


    def fetch_some(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as c:
            got = b""
            while len(got) < 1000:
                chunk = c.recv(65536)
                if not chunk:
                    break
                got += chunk
            self.assertGreaterEqual(len(got), 1000)

    def sessions(self):
        return status(self.b_admin)["sessions"]

    def test_z_a_client_during_the_linger_reuses_the_session_then_it_ends(self):
        self.fetch_some()
        def lingering():
            s = self.sessions()["sessions"]
            return s if len(s) == 1 and s[0]["state"] == "lingering" else None
        first = wait_until(lingering, 40, "the session to linger after its last channel")[0]
        self.fetch_some()   # during the linger
        s = wait_until(lingering, 40, "the session to linger again")[0]
        self.assertEqual(s["sessionId"], first["sessionId"], "a new session was opened")
        opened = int(self.sessions()["opened"])
        # After the linger (4 s here) the session is closed on both nodes.
        wait_until(lambda: not self.sessions()["sessions"], 30, "node B's session to end")
        wait_until(lambda: not status(self.a_admin)["sessions"]["sessions"], 30,
                   "node A's session to end")
        closed = self.sessions()["recentlyClosed"]
        self.assertIn("idle", closed[-1]["closeReason"])
        self.fetch_some()   # a new client after that opens a new session
        self.assertEqual(int(self.sessions()["opened"]), opened + 1)


if __name__ == "__main__":
    unittest.main()
