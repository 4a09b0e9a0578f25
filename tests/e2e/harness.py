"""Process-level test harness: real p2proxy processes on loopback.

Only Python's standard library. Every wait is bounded in time; every process
started is stopped (SIGTERM, then SIGKILL) when the test ends.
"""
import atexit
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

BIN = os.environ.get("P2PROXY_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "p2proxy")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, what, step=0.05):
    """Polls pred() until it returns a true value; fails after timeout s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # not up yet
            last = e
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def http_get(url, timeout=5):
    """Returns (status, body text); never raises for HTTP errors."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Proc:
    """A p2proxy process whose stderr goes to a log file we can search."""

    def __init__(self, workdir, name, args):
        self.name = name
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.args = [BIN] + args
        self.p = None
        self.start()

    def start(self):
        self.log = open(self.log_path, "ab")
        self.p = subprocess.Popen(self.args, stdout=self.log, stderr=self.log,
                                  stdin=subprocess.DEVNULL)

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def kill(self):
        if self.alive():
            self.p.kill()
            self.p.wait(timeout=10)
        self.log.close()

    def stop(self, timeout=10):
        """SIGTERM; returns the exit code (SIGKILL after timeout)."""
        if self.p is None:
            return None
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
        self.log.close()
        return self.p.returncode


def run(args, timeout=30):
    return subprocess.run([BIN] + args, capture_output=True, text=True,
                          timeout=timeout)


class Lab:
    """A signaling server and any number of nodes in a temp dir."""

    def __init__(self, token="test-network-token"):
        self.dir = tempfile.mkdtemp(prefix="p2proxy-e2e-")
        self.token = token
        self.procs = []
        self.signal_port = free_port()
        self.signal_admin = free_port()
        with open(os.path.join(self.dir, "token"), "w") as f:
            f.write(token + "\n")
        os.chmod(os.path.join(self.dir, "token"), 0o600)  # refused otherwise
        # The server's TLS key, created by its first start; its id is what
        # nodes pin (they trust it on first use when they don't).
        self.server_key = os.path.join(self.dir, "signal.key")
        self.server = None
        # Also when a setUpClass fails (tearDownClass is not called then).
        atexit.register(self.close)

    def start_server(self):
        self.server = self.spawn("signal", [
            "signal", "--listen", f"127.0.0.1:{self.signal_port}",
            "--key", self.server_key,
            "--token-file", os.path.join(self.dir, "token"),
            "--admin", f"127.0.0.1:{self.signal_admin}"])
        wait_until(lambda: http_get(
            f"http://127.0.0.1:{self.signal_admin}/v1/status")[0] == 200,
            10, "the signaling server's admin port")
        return self.server

    def server_id(self):
        """The id of the server's key (the server creates it on start)."""
        r = run(["id", "--key", self.server_key])
        if r.returncode != 0:
            raise AssertionError(f"p2proxy id: {r.stderr}")
        return r.stdout.strip()

    def spawn(self, name, args):
        p = Proc(self.dir, name, args)
        self.procs.append(p)
        return p

    def node(self, name, exports=(), token=None, extra="", signal_extra=""):
        """Writes NAME.toml and starts the node; returns (proc, admin port).
        signal_extra: more lines for the [signal] table."""
        admin = free_port()
        ex = "".join(
            f'\n[[export]]\nname = "{e}"\ntarget = "127.0.0.1:9"\n'
            f'protocol = "tcp"\nallow = ["*"]\n' for e in exports)
        cfg = (f'[node]\nkey = "{name}.key"\n'
               f'[signal]\nserver = "127.0.0.1:{self.signal_port}"\n'
               f'token = "{token if token is not None else self.token}"\n'
               f'{signal_extra}'
               f'[admin]\nlisten = "127.0.0.1:{admin}"\n{extra}{ex}')
        path = os.path.join(self.dir, f"{name}.toml")
        with open(path, "w") as f:
            f.write(cfg)
        return self.spawn(name, ["node", "--config", path]), admin

    def close(self):
        for p in reversed(self.procs):
            p.stop()
        self.procs = []


def status(admin_port):
    code, body = http_get(f"http://127.0.0.1:{admin_port}/v1/status")
    if code != 200:
        raise AssertionError(f"status answered {code}: {body}")
    return json.loads(body)


def online(admin_port):
    st = status(admin_port)
    return st if st.get("signal", {}).get("state") == "online" else None
