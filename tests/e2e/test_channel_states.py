"""Channel close semantics end to end (issue #4, cases 6 and 7).

ThousandChannels: 1000 clients through a tcp listener to a real TCP echo
server; then every client and the server close their sockets at the same
moment. Afterwards neither node has a channel left, their open fds and
running actors are back at the baseline, nothing was logged at error level,
and both still serve.

CloseInEveryState: a client gone while the session is still connecting
(the pinned exporting node is frozen with SIGSTOP: online, never answering),
gone while the export's target is connecting (a listening socket whose
accept queue is full), a target that refuses, a target that closes first
(the client reads everything, then EOF), and the exporting node killed with
SIGKILL (clients through the other node are closed within the session's
idle timeout)."""
import hashlib
import os
import resource
import selectors
import signal
import socket
import threading
import time
import unittest

from harness import Lab, free_port, online, status, wait_until

N_CHANNELS = 1000
FD_SLACK = 12       # fds a node may hold beyond its baseline afterwards
ACTOR_SLACK = 6     # and running actors


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        raise unittest.SkipTest(f"needs {want} open files (RLIMIT_NOFILE {soft})")


class EchoServer:
    """A TCP echo server on loopback (one thread, selectors). close_all()
    closes every connection it holds, from its own thread, at once."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4096)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, "accept")
        self.wake_r, self.wake_w = socket.socketpair()
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.conns = set()
        self.accepted = 0
        self.eofs = 0            # connections the other side closed first
        self.received = {}       # connection -> bytes it sent so far
        self.completed = []      # bytes of each connection that ended in EOF
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.closed = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def open_count(self):
        with self.lock:
            return len(self.conns)

    def _drop(self, c):
        self.sel.unregister(c)
        c.close()
        with self.lock:
            self.conns.discard(c)
            self.received.pop(c, None)

    def _run(self):
        while not self.stopping:
            for key, _ in self.sel.select(timeout=0.2):
                if key.data == "accept":
                    while True:
                        try:
                            c, _ = self.lsock.accept()
                        except BlockingIOError:
                            break
                        c.setblocking(False)
                        self.sel.register(c, selectors.EVENT_READ, "conn")
                        with self.lock:
                            self.conns.add(c)
                            self.accepted += 1
                elif key.data == "wake":
                    self.wake_r.recv(64)
                elif key.fileobj in self.conns:
                    c = key.fileobj
                    try:
                        data = c.recv(65536)
                    except (ConnectionResetError, BlockingIOError):
                        data = None
                    if data is None:
                        continue
                    if not data:
                        with self.lock:
                            self.eofs += 1
                            self.completed.append(bytes(self.received.pop(c, b"")))
                        self._drop(c)
                        continue
                    with self.lock:
                        self.received.setdefault(c, bytearray()).extend(data)
                    try:
                        c.sendall(data)  # small pieces: the buffer has room
                    except OSError:
                        self._drop(c)
            if self.closing.is_set() and not self.closed.is_set():
                for c in list(self.conns):
                    self._drop(c)
                self.closed.set()
        for c in list(self.conns):
            self._drop(c)
        self.sel.close()
        self.lsock.close()

    def close_all(self):
        self.closing.set()
        self.wake_w.send(b"x")

    def stop(self):
        self.stopping = True
        self.wake_w.send(b"x")
        self.thread.join(timeout=10)
        self.wake_r.close()
        self.wake_w.close()


def node_figures(admin):
    p = status(admin)["process"]
    return int(p["openFds"]), int(p["runningActors"])


def error_lines(proc):
    return [l for l in proc.log_text().splitlines() if " ERROR " in l]


def channels(admin):
    return status(admin).get("channels", [])


class ThousandChannels(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Each channel is a socket in this process (client) and in the echo
        # server, and one in each node (they inherit the limit).
        raise_fd_limit(2 * N_CHANNELS + 1024)
        cls.lab = Lab()
        cls.echo = EchoServer()
        try:
            cls.lab.start_server()
            linger = '[session]\nidle_linger = "10m"\n'  # the session stays: a stable baseline
            cls.a, cls.a_admin = cls.lab.node("node-a", extra=(
                linger + f'[[export]]\nname = "echo"\ntarget = "127.0.0.1:{cls.echo.port}"\n'
                f'protocol = "tcp"\nallow = ["*"]\n'))
            cls.port = free_port()
            cls.b, cls.b_admin = cls.lab.node("node-b", extra=(
                linger + f'[[listen]]\nbind = "127.0.0.1:{cls.port}"\nprotocol = "tcp"\n'
                f'resource = "echo"\n'))
            wait_until(lambda: online(cls.a_admin), 10, "node A online")
            wait_until(lambda: online(cls.b_admin), 10, "node B online")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.lab.close()
        cls.echo.stop()

    def echo_once(self, text=b"warm-up\n"):
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(text)
            got = b""
            while len(got) < len(text):
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            self.assertEqual(got, text)

    def settle(self, what, timeout=60):
        for name, admin in (("A", self.a_admin), ("B", self.b_admin)):
            left = []

            def none_left():
                left[:] = channels(admin)
                return not left
            try:
                wait_until(none_left, timeout, f"node {name}'s channels to end ({what})",
                           step=0.5)
            except AssertionError:
                self.fail(f"node {name} still has {len(left)} channels {what}; "
                          f"first: {left[:3]}")

    def test_both_ends_close_1000_channels_at_once(self):
        # Baseline with the session up and idle.
        self.echo_once()
        self.settle("after the warm-up")
        wait_until(lambda: self.echo.open_count() == 0, 30, "the echo server to be idle")
        time.sleep(1)  # let the nodes' own timers and workers come to rest
        base = {"A": node_figures(self.a_admin), "B": node_figures(self.b_admin)}

        # 1000 clients, each sends a line and reads it back.
        clients = []
        try:
            for i in range(N_CHANNELS):
                clients.append(socket.create_connection(("127.0.0.1", self.port),
                                                        timeout=60))
            for i, c in enumerate(clients):
                c.sendall(b"channel %d\n" % i)
            for i, c in enumerate(clients):
                want = b"channel %d\n" % i
                got = b""
                while len(got) < len(want):
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                self.assertEqual(got, want, f"client {i}")
            wait_until(lambda: self.echo.open_count() == N_CHANNELS, 30,
                       f"the echo server to hold {N_CHANNELS} connections")
            n = {name: len(channels(admin)) for name, admin
                 in (("A", self.a_admin), ("B", self.b_admin))}
            self.assertEqual(n, {"A": N_CHANNELS, "B": N_CHANNELS})

            # Both ends close at once: the server from its thread, the
            # clients from here.
            self.echo.close_all()
            for c in clients:
                c.close()
        finally:
            for c in clients:
                c.close()
        self.assertTrue(self.echo.closed.wait(30), "the echo server did not close")

        self.settle("after both ends closed")
        for name, admin in (("A", self.a_admin), ("B", self.b_admin)):
            fds0, actors0 = base[name]
            got = []

            def back():
                got[:] = node_figures(admin)
                return got[0] <= fds0 + FD_SLACK and got[1] <= actors0 + ACTOR_SLACK
            try:
                wait_until(back, 60, f"node {name}'s fds and actors back", step=0.5)
            except AssertionError:
                self.fail(f"node {name}: open fds {got[0]} (baseline {fds0}), running "
                          f"actors {got[1]} (baseline {actors0})")
        for p in (self.a, self.b):
            self.assertEqual(error_lines(p), [], f"{p.name} logged errors")
        # The session holds no stream for them any more.
        for name, admin in (("A", self.a_admin), ("B", self.b_admin)):
            wait_until(lambda: all(int(s.get("openStreams", 0)) == 0 for s in
                                   status(admin)["sessions"]["sessions"]), 30,
                       f"node {name}'s session to hold no stream")
        # No refusals, and the listener has no channel open.
        for a in status(self.b_admin)["actors"]:
            if a["name"] == "listener":
                self.assertEqual(a["fields"].get("refused"), "0", a)
                self.assertEqual(a["fields"].get("open_channels"), "0", a)
        # Still healthy and serving, through the same session.
        self.assertTrue(self.a.alive() and self.b.alive())
        online(self.a_admin) or self.fail("node A is not online")
        online(self.b_admin) or self.fail("node B is not online")
        self.echo_once(b"after the storm\n")
        self.assertEqual(len(status(self.b_admin)["sessions"]["sessions"]), 1)


class StuckTarget:
    """A listening socket whose accept queue is full: a connect to it gets
    no answer (its SYNs are dropped) until drain() accepts what waits."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.fillers = []
        for _ in range(8):
            s = socket.socket()
            s.settimeout(1)
            try:
                s.connect(("127.0.0.1", self.port))
            except (socket.timeout, OSError):
                s.close()
                break
            self.fillers.append(s)
        else:
            raise AssertionError("the accept queue never filled")

    def drain(self):
        """Accepts and closes the fillers' connections: room again."""
        self.lsock.settimeout(5)
        for _ in self.fillers:
            c, _ = self.lsock.accept()
            c.close()
        for s in self.fillers:
            s.close()
        self.fillers = []

    def accept(self, timeout):
        self.lsock.settimeout(timeout)
        try:
            return self.lsock.accept()[0]
        except socket.timeout:
            return None

    def close(self):
        for s in self.fillers:
            s.close()
        self.lsock.close()


class Talker:
    """A target that sends `payload` to each client, then closes."""

    def __init__(self, payload):
        self.payload = payload
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                c.settimeout(30)
                c.sendall(self.payload)
            except OSError:
                pass
            finally:
                c.close()

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=10)
        self.lsock.close()


def read_to_end(sock, timeout):
    """Reads until EOF; returns (bytes, "eof" | "reset" | "open", seconds)."""
    t0 = time.monotonic()
    got = bytearray()
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return bytes(got), "eof", time.monotonic() - t0
            got += chunk
    except ConnectionResetError:
        return bytes(got), "reset", time.monotonic() - t0
    except socket.timeout:
        return bytes(got), "open", time.monotonic() - t0


class CloseInEveryState(unittest.TestCase):
    IDLE_TIMEOUT = 6        # [session] idle_timeout below, seconds
    SESSION_CONNECT = 20    # [session] connect_timeout below
    TARGET_CONNECT = 10     # the export's target connect timeout (stream_service)

    @classmethod
    def setUpClass(cls):
        cls.lab = Lab()
        cls.echo = EchoServer()
        cls.stuck = StuckTarget()
        cls.payload = os.urandom(4 << 20)
        cls.talker = Talker(cls.payload)
        cls.c = None
        try:
            cls._setup()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def _setup(cls):
        cls.lab.start_server()
        session = (f'[session]\nidle_timeout = "{cls.IDLE_TIMEOUT}s"\nkeepalive = "2s"\n'
                   f'connect_timeout = "{cls.SESSION_CONNECT}s"\nidle_linger = "10m"\n')
        refusing = free_port()  # nothing listens there
        exports = "".join(
            f'[[export]]\nname = "{name}"\ntarget = "127.0.0.1:{port}"\n'
            f'protocol = "tcp"\nallow = ["*"]\n'
            for name, port in (("echo", cls.echo.port), ("stuck", cls.stuck.port),
                               ("dead", refusing), ("talker", cls.talker.port)))
        cls.a, cls.a_admin = cls.lab.node("node-a", extra=session + exports)
        # Node C exports echo too; it is frozen (SIGSTOP) while a client
        # waits for a session to it: online, but it never answers.
        cls.sink = EchoServer()
        cls.c, cls.c_admin = cls.lab.node("node-c", extra=session + (
            f'[[export]]\nname = "echo"\ntarget = "127.0.0.1:{cls.echo.port}"\n'
            f'protocol = "tcp"\nallow = ["*"]\n'
            f'[[export]]\nname = "sink"\ntarget = "127.0.0.1:{cls.sink.port}"\n'
            f'protocol = "tcp"\nallow = ["*"]\n'))
        wait_until(lambda: online(cls.a_admin), 10, "node A online")
        wait_until(lambda: online(cls.c_admin), 10, "node C online")
        cls.a_id = status(cls.a_admin)["nodeId"]
        cls.c_id = status(cls.c_admin)["nodeId"]
        cls.port = {name: free_port() for name in
                    ("echo", "stuck", "dead", "talker", "frozen", "frozen_sink", "http")}
        listens = "".join(
            f'[[listen]]\nbind = "127.0.0.1:{cls.port[name]}"\nprotocol = "tcp"\n'
            f'resource = "{name}"\npeer = "{cls.a_id}"\n'
            for name in ("echo", "stuck", "dead", "talker"))
        listens += (f'[[listen]]\nbind = "127.0.0.1:{cls.port["frozen"]}"\n'
                    f'protocol = "tcp"\nresource = "echo"\npeer = "{cls.c_id}"\n')
        listens += (f'[[listen]]\nbind = "127.0.0.1:{cls.port["frozen_sink"]}"\n'
                    f'protocol = "tcp"\nresource = "sink"\npeer = "{cls.c_id}"\n')
        listens += (f'[[listen]]\nbind = "127.0.0.1:{cls.port["http"]}"\n'
                    f'protocol = "http"\npeer = "{cls.a_id}"\n')
        cls.b, cls.b_admin = cls.lab.node("node-b", extra=session + listens)
        wait_until(lambda: online(cls.b_admin), 10, "node B online")

    @classmethod
    def tearDownClass(cls):
        if cls.c is not None and cls.c.alive():
            os.kill(cls.c.p.pid, signal.SIGCONT)
        cls.lab.close()
        cls.echo.stop()
        if hasattr(cls, "sink"):
            cls.sink.stop()
        cls.stuck.close()
        cls.talker.stop()

    # -- helpers ---------------------------------------------------------------

    def connect(self, name):
        return socket.create_connection(("127.0.0.1", self.port[name]), timeout=30)

    def echo_works(self, name="echo"):
        with self.connect(name) as s:
            s.sendall(b"ping\n")
            got, how, _ = b"", None, None
            s.settimeout(30)
            while len(got) < 5:
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
            self.assertEqual(got, b"ping\n")

    def channel_state(self, admin, resource):
        for ch in channels(admin):
            if ch.get("resource") == resource:
                return ch.get("state")

    def settle(self, what, timeout=30, nodes=None):
        for name, admin in nodes or (("A", self.a_admin), ("B", self.b_admin)):
            left = []

            def none_left():
                left[:] = channels(admin)
                return not left
            try:
                wait_until(none_left, timeout, f"node {name}'s channels to end", step=0.2)
            except AssertionError:
                self.fail(f"node {name} still has channels {what}: {left}")

    def listener_fields(self, name):
        bind = f"127.0.0.1:{self.port[name]}"
        for a in status(self.b_admin)["actors"]:
            if a["name"] == "listener" and a["fields"].get("bind") == bind:
                return a["fields"]
        self.fail(f"no listener {bind}")

    def assert_no_errors(self, *procs):
        for p in procs:
            self.assertEqual(error_lines(p), [], f"{p.name} logged errors")

    # -- the states --------------------------------------------------------------

    def test_1_client_gone_while_the_session_is_connecting(self):
        os.kill(self.c.p.pid, signal.SIGSTOP)
        try:
            s = self.connect("frozen")
            wait_until(lambda: self.channel_state(self.b_admin, "echo") == "connecting-peer",
                       10, "the channel to wait for its session")
            s.close()
            t0 = time.monotonic()
            # The channel lets go of the client at once, not when the
            # session attempt gives up (connect_timeout).
            self.settle("after the client left", timeout=self.SESSION_CONNECT / 2,
                        nodes=(("B", self.b_admin),))
            self.assertLess(time.monotonic() - t0, self.SESSION_CONNECT / 2)
            self.assertEqual(self.echo.accepted, 0, "a connection reached the target")
        finally:
            os.kill(self.c.p.pid, signal.SIGCONT)
        # The session attempt itself ends (C answers late, or it times out);
        # nothing reached the target meanwhile, and nobody logged an error.
        unsettled = []

        def settled():
            unsettled[:] = [s["state"] for s in status(self.b_admin)["sessions"]["sessions"]
                            if s["peer"] == self.c_id
                            and s["state"] not in ("ready", "lingering")]
            return not unsettled
        try:
            wait_until(settled, self.SESSION_CONNECT + 15, "the session to C to settle")
        except AssertionError:
            self.fail(f"the session to C is still {unsettled}")
        self.assertEqual(self.echo.accepted, 0, "a connection reached the target")
        self.assert_no_errors(self.b, self.c)

    def test_1a_client_sends_and_leaves_before_the_tunnel_is_up(self):
        # What it sent before leaving still reaches the target, then EOF:
        # a client that writes and closes (nc < file) loses nothing.
        data = os.urandom(200 * 1024)  # more than the channel holds early
        os.kill(self.c.p.pid, signal.SIGSTOP)
        try:
            with self.connect("frozen_sink") as s:
                s.sendall(data)
            # (connecting-peer, or remote-connecting if test 1 left a
            # session to C: C is frozen either way, so the tunnel is not up)
            wait_until(lambda: self.channel_state(self.b_admin, "sink")
                       in ("connecting-peer", "peer-ready", "remote-connecting"),
                       10, "the channel to wait for its tunnel")
        finally:
            os.kill(self.c.p.pid, signal.SIGCONT)
        wait_until(lambda: self.sink.completed, self.SESSION_CONNECT + 15,
                   "the target to see the client's bytes and EOF")
        self.assertEqual(len(self.sink.completed), 1)
        got = self.sink.completed[0]
        self.assertEqual(len(got), len(data))
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(data).digest())
        self.settle("after the delivery", nodes=(("B", self.b_admin), ("C", self.c_admin)))
        self.assert_no_errors(self.b, self.c)

    def test_2_client_gone_while_the_target_is_connecting(self):
        self.echo_works()  # the session to A is up (its sockets are in the baseline)
        self.settle("before")
        fds_a = node_figures(self.a_admin)[0]
        s = self.connect("stuck")
        wait_until(lambda: self.channel_state(self.b_admin, "stuck") == "remote-connecting",
                   15, "the channel to wait for the target")
        s.close()
        # Both nodes let go at once, not when the target connect times out.
        self.settle("after the client left", timeout=self.TARGET_CONNECT - 2)
        # Room in the target's queue again: the export's connect, if still
        # under way, now succeeds; that socket must be closed, not leaked.
        self.stuck.drain()
        c = self.stuck.accept(timeout=self.TARGET_CONNECT + 5)
        if c is not None:
            with c:
                got, how, took = read_to_end(c, timeout=10)
            self.assertEqual((got, how), (b"", "eof"),
                             f"the late target connection was not closed ({took:.1f}s)")
        now = []

        def back():
            now[:] = [node_figures(self.a_admin)[0]]
            return now[0] <= fds_a + 2
        try:
            wait_until(back, 20, "node A's fds back to the baseline")
        except AssertionError:
            self.fail(f"node A holds {now[0]} fds, {fds_a} before "
                      f"(late target connection: {c is not None})")
        self.assert_no_errors(self.a, self.b)

    def test_3_target_refuses(self):
        before = int(self.listener_fields("dead").get("refused_target_failed", 0))
        with self.connect("dead") as s:
            got, how, _ = read_to_end(s, timeout=30)
        self.assertEqual(got, b"")
        self.assertNotEqual(how, "open")
        wait_until(lambda: int(self.listener_fields("dead").get("refused_target_failed", 0))
                   == before + 1, 10, "the refusal counted as target_failed")
        # An http client gets the reason.
        with socket.create_connection(("127.0.0.1", self.port["http"]), timeout=30) as s:
            s.sendall(b"GET /r/dead/ HTTP/1.1\r\nHost: x\r\n\r\n")
            got, how, _ = read_to_end(s, timeout=30)
        self.assertTrue(got.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), got[:300])
        self.assertIn(b"Connection refused", got)
        self.settle("after the refusals")
        self.assert_no_errors(self.a, self.b)

    def test_4_target_closes_first(self):
        with self.connect("talker") as s:
            got, how, _ = read_to_end(s, timeout=60)
        self.assertEqual(how, "eof", "the client should see an orderly close")
        self.assertEqual(len(got), len(self.payload))
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(self.payload).digest())
        self.settle("after the target closed")
        self.assert_no_errors(self.a, self.b)

    def test_5_client_closes_first(self):
        opened = self.echo.accepted
        eofs = self.echo.eofs
        with self.connect("echo") as s:
            s.sendall(b"ping\n")
            self.assertEqual(s.recv(16), b"ping\n")
        # The target sees its client finish, and everything ends.
        wait_until(lambda: self.echo.eofs == eofs + 1 and self.echo.accepted == opened + 1
                   and self.echo.open_count() == 0, 15, "the echo server to see EOF")
        self.settle("after the client closed")
        self.assert_no_errors(self.a, self.b)

    def test_9_peer_node_killed(self):
        clients = [self.connect("echo") for _ in range(5)]
        try:
            for c in clients:
                c.sendall(b"ping\n")
                self.assertEqual(c.recv(16), b"ping\n")
            self.assert_no_errors(self.a)
            self.a.kill()  # SIGKILL
            bound = self.IDLE_TIMEOUT + 10
            for i, c in enumerate(clients):
                got, how, took = read_to_end(c, timeout=bound)
                self.assertNotEqual(how, "open",
                                    f"client {i} still open {bound}s after node A died")
                self.assertEqual(got, b"")
        finally:
            for c in clients:
                c.close()
        self.settle("after node A died", nodes=(("B", self.b_admin),))
        self.assert_no_errors(self.b)
        self.assertTrue(self.b.alive())
        online(self.b_admin) or self.fail("node B is not online")
        # Node A comes back (same key, same id): B reaches it again.
        self.a.start()
        wait_until(lambda: online(self.a_admin), 20, "node A back online")
        wait_until(lambda: self.echo_works() is None, 60, "a client through the new session",
                   step=1)


if __name__ == "__main__":
    unittest.main()
