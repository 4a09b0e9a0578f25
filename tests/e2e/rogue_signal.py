"""A rogue signaling server for process-level tests.

It speaks the node side of proto/signal.proto well enough for real nodes to
log in, look up and open sessions through it, but it is the attacker:

- it accepts every Login without checking token, id or signature;
- with a `twist=(victim, mallory)` it lies about who is who: Signals
  addressed to `victim` are delivered to `mallory`'s connection, and Signals
  from `mallory` are delivered with `from` set to `victim`. `victim` need
  not be online; look-ups that would name `mallory` name `victim` instead.

Without a twist it routes honestly (a positive control that the server
speaks the protocol). Every socket has a timeout, so close() always ends the
threads in bounded time.

It speaks TLS 1.3 like the real server, with a certificate for a key of its
own (tls_server_context()): nodes that do not pin a server id trust it on
first use, as they would trust any first server.

The Python protobuf module is generated at test time with protoc from the
repository's proto/signal.proto into a temp dir (see load_signal_pb2()).
"""
import importlib.util
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROTO_DIR = os.path.join(REPO, "proto")
MAX_FRAME = 65536
# Debian's python3-protobuf; invisible to a python3 from pyenv or a venv.
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"

_pb2 = None


def _unavailable(why):
    """Skips the calling test, or fails it under CI=true."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise RuntimeError(f"{why} (CI=true: not skipping; run "
                           f"deploy/install-deps.sh)")
    raise unittest.SkipTest(why)


def _import_protobuf():
    try:
        import google.protobuf  # noqa: F401
        return
    except ImportError:
        pass
    if os.path.isdir(DEBIAN_DIST_PACKAGES) and DEBIAN_DIST_PACKAGES not in sys.path:
        # Appended, so the interpreter's own packages still win. Drop any
        # half-found 'google' namespace so the retry looks again.
        sys.path.append(DEBIAN_DIST_PACKAGES)
        for m in [m for m in sys.modules if m == "google" or m.startswith("google.")]:
            del sys.modules[m]
        try:
            import google.protobuf  # noqa: F401
            return
        except ImportError:
            pass
    _unavailable(f"the Python protobuf runtime is not importable by "
                 f"{sys.executable} (apt-get install python3-protobuf)")


def load_signal_pb2():
    """Returns signal_pb2 generated from proto/signal.proto (once per process)."""
    global _pb2
    if _pb2 is not None:
        return _pb2
    _import_protobuf()
    protoc = shutil.which("protoc")
    if protoc is None:
        _unavailable("protoc is not installed (apt-get install protobuf-compiler)")
    out = tempfile.mkdtemp(prefix="p2proxy-pb2-")
    try:
        r = subprocess.run([protoc, f"--python_out={out}", "-I", PROTO_DIR,
                            os.path.join(PROTO_DIR, "signal.proto")],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"protoc failed: {r.stderr.strip()}")
        spec = importlib.util.spec_from_file_location(
            "signal_pb2", os.path.join(out, "signal_pb2.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    _pb2 = mod
    return mod


def make_server_cert(directory, name="rogue"):
    """A p2proxy key NAME.key and a self-signed NAME.crt for it in
    DIRECTORY (p2proxy keygen + openssl req); returns (key, cert, id)."""
    from harness import run
    key = os.path.join(directory, f"{name}.key")
    cert = os.path.join(directory, f"{name}.crt")
    r = run(["keygen", "--out", key])
    if r.returncode != 0:
        raise RuntimeError(f"p2proxy keygen failed: {r.stderr}")
    openssl = shutil.which("openssl")
    if openssl is None:
        _unavailable("the openssl command is not installed")
    o = subprocess.run([openssl, "req", "-x509", "-new", "-key", key,
                        "-subj", f"/CN={name}", "-days", "2", "-out", cert],
                       capture_output=True, text=True, timeout=60)
    if o.returncode != 0:
        raise RuntimeError(f"openssl req failed: {o.stderr.strip()}")
    return key, cert, r.stdout.strip()


def tls_server_context(key, cert):
    """A TLS 1.3-only server context presenting CERT for KEY."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    return ctx


class _Client:
    def __init__(self, sock, addr):
        self.sock = sock
        self.addr = addr
        self.node_id = None
        self.names = []
        self.lock = threading.Lock()

    def send(self, env):
        data = env.SerializeToString()
        # One lock for reads and writes: an SSL object must not be used by
        # two threads at once.
        with self.lock:
            self.sock.sendall(struct.pack(">I", len(data)) + data)


class RogueSignal:
    """A lying signaling server on 127.0.0.1:port, served by threads."""

    def __init__(self, port, twist=None, heartbeat_seconds=15):
        self.pb = load_signal_pb2()
        self.port = port
        self.victim, self.mallory = twist if twist else (None, None)
        self.heartbeat = heartbeat_seconds
        self.lock = threading.Lock()
        self.clients = {}      # node id -> _Client (newest login wins)
        self.all = []          # every _Client, for close()
        self.threads = []
        self.stopping = threading.Event()
        # What happened, for assertions.
        self.logins = []            # node ids, in order
        self.signals_routed = 0     # delivered to the addressee's own connection
        self.signals_redirected = 0  # addressed to victim, given to mallory
        self.signals_forged = 0     # from mallory, delivered as from victim
        self.payloads = []          # (from as delivered, to, payload kind)
        self.dir = tempfile.mkdtemp(prefix="p2proxy-rogue-")
        key, cert, self.server_id = make_server_cert(self.dir)
        self.tls = tls_server_context(key, cert)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)
        self._spawn(self._accept_loop)

    # -- lifecycle -------------------------------------------------------------

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        self.threads.append(t)
        t.start()

    def close(self):
        self.stopping.set()
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            clients = list(self.all)
        for c in clients:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.sock.close()
        for t in self.threads:
            t.join(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def online(self, node_id):
        with self.lock:
            return node_id in self.clients

    # -- threads ---------------------------------------------------------------

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                sock, addr = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(5)
            try:
                sock = self.tls.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                sock.close()
                continue
            # Short: a reader holds the connection's lock while it waits.
            sock.settimeout(0.05)
            c = _Client(sock, addr)
            with self.lock:
                self.all.append(c)
            self._spawn(self._serve, c)

    def _recv_exact(self, c, n):
        buf = b""
        while len(buf) < n:
            if self.stopping.is_set():
                return None
            try:
                with c.lock:
                    chunk = c.sock.recv(n - len(buf))
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def _serve(self, c):
        pb = self.pb
        try:
            hello = pb.Envelope()
            hello.hello.nonce = os.urandom(32)
            hello.hello.server_version = "rogue-signal"
            hello.hello.heartbeat_seconds = self.heartbeat
            c.send(hello)
            while not self.stopping.is_set():
                head = self._recv_exact(c, 4)
                if head is None:
                    break
                (n,) = struct.unpack(">I", head)
                if n > MAX_FRAME:
                    break
                body = self._recv_exact(c, n)
                if body is None:
                    break
                env = pb.Envelope()
                env.ParseFromString(body)
                self._on_frame(c, env)
        except OSError:
            pass
        finally:
            with self.lock:
                if c.node_id and self.clients.get(c.node_id) is c:
                    del self.clients[c.node_id]
            try:
                c.sock.close()
            except OSError:
                pass

    # -- the protocol, as a liar -----------------------------------------------

    def _on_frame(self, c, env):
        pb = self.pb
        kind = env.WhichOneof("msg")
        if kind == "login":
            # The attacker checks nothing.
            c.node_id = env.login.node_id
            with self.lock:
                self.clients[c.node_id] = c
                self.logins.append(c.node_id)
            ok = pb.Envelope()
            ok.login_ok.node_id = c.node_id
            ok.login_ok.observed_address = f"{c.addr[0]}:{c.addr[1]}"
            ok.login_ok.heartbeat_seconds = self.heartbeat
            c.send(ok)
        elif c.node_id is None:
            return  # nothing else before a login
        elif kind == "register":
            c.names = list(env.register.names)
        elif kind == "ping":
            out = pb.Envelope()
            out.pong.seq = env.ping.seq
            c.send(out)
        elif kind == "lookup":
            with self.lock:
                ids = sorted({self._claimed(nid) for nid, cl in self.clients.items()
                              if env.lookup.name in cl.names})
            out = pb.Envelope()
            out.lookup_result.request_id = env.lookup.request_id
            out.lookup_result.name = env.lookup.name
            out.lookup_result.node_ids.extend(ids)
            c.send(out)
        elif kind == "signal":
            self._route(c, env)

    def _claimed(self, node_id):
        """The id the server claims for a connection's node."""
        return self.victim if self.mallory and node_id == self.mallory else node_id

    def _route(self, c, env):
        pb = self.pb
        sig = env.signal
        to = sig.to
        setattr(sig, "from", self._claimed(c.node_id))
        with self.lock:
            if self.mallory and c.node_id == self.mallory:
                self.signals_forged += 1
            if self.victim and to == self.victim:
                target = self.clients.get(self.mallory)
                redirected = target is not None
            else:
                target = self.clients.get(to)
                redirected = False
            if target is not None:
                if redirected:
                    self.signals_redirected += 1
                else:
                    self.signals_routed += 1
                self.payloads.append((getattr(sig, "from"), to,
                                      sig.WhichOneof("payload")))
        if target is None:
            err = pb.Envelope()
            err.error.code = pb.PEER_OFFLINE
            err.error.text = f"node {to} is not online"
            err.error.peer = to
            err.error.session_id = sig.session_id
            c.send(err)
            return
        try:
            target.send(env)
        except OSError:
            pass
