"""The README's first command ends in `p2proxy demo`: it must bring up the
server and both nodes, show them finding each other, and stop cleanly."""
import os
import signal
import subprocess
import tempfile
import unittest

import json

from harness import BIN, free_port, http_get, status, wait_until


class Demo(unittest.TestCase):
    def test_demo_nodes_find_each_other_and_stop_on_ctrl_c(self):
        # Four consecutive free ports: try a few bases.
        for _ in range(20):
            base = free_port()
            if base + 4 < 65536 and all(self._free(base + i) for i in range(5)):
                break
        workdir = tempfile.mkdtemp(prefix="p2proxy-demo-")
        out_path = os.path.join(workdir, "demo.out")
        with open(out_path, "wb") as out:
            p = subprocess.Popen([BIN, "demo", "--port", str(base), "--dir", workdir],
                                 stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
            try:
                text = lambda: open(out_path).read()
                wait_until(lambda: "round trip" in text() or "failed" in text(),
                           20, "the demo's look-up and probe")
                self.assertIn("viewer-host looked up status-page", text())
                self.assertIn("probed camera-host", text())
                srv = status(base + 3)
                self.assertEqual(len(srv["nodes"]), 2)
                cam = status(base + 1)
                self.assertEqual(cam["signal"]["state"], "online")
                self.assertEqual(cam["exports"][0]["name"], "status-page")
                # The README's promise: the page, fetched through the tunnel.
                code, body = http_get(f"http://127.0.0.1:{base + 4}/v1/status")
                self.assertEqual(code, 200, body)
                self.assertEqual(json.loads(body)["nodeId"], cam["nodeId"])
                viewer = status(base + 2)
                self.assertEqual(len(viewer["sessions"]["sessions"]), 1)
                self.assertEqual(oct(os.stat(os.path.join(workdir, "camera-host.key")).st_mode & 0o777), "0o600")
                p.send_signal(signal.SIGINT)
                self.assertEqual(p.wait(timeout=15), 0, text())
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()

    @staticmethod
    def _free(port):
        import socket
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                return False


if __name__ == "__main__":
    unittest.main()
