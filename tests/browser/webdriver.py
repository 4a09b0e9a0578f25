"""A small W3C WebDriver client over HTTP (urllib only) for Debian's chromium + chromium-driver.

    with Chrome(log_dir) as b:
        b.get("http://127.0.0.1:7070/")
        b.wait_css("tr.session", timeout=20)
        b.screenshot("page.png")

It starts chromedriver on a free loopback port, opens one headless session with
/usr/bin/chromium, and ends both (session deleted, chromedriver killed by its pid) on exit.
Every call is bounded in time.
"""
import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C element reference key

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver",)


def find(candidates, name):
    for c in candidates:
        if os.access(c, os.X_OK):
            return c
    return shutil.which(name)


def chromium_path():
    return find(CHROMIUM_CANDIDATES, "chromium")


def driver_path():
    return find(DRIVER_CANDIDATES, "chromedriver")


class WebDriverError(Exception):
    pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Chrome:
    def __init__(self, work_dir, width=1400, height=1200, start_timeout=30.0):
        self.work_dir = work_dir
        self.size = (width, height)
        self.start_timeout = start_timeout
        self.proc = None
        self.session = None
        self.port = None
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=work_dir)

    # --- plumbing ------------------------------------------------------------------------
    def _call(self, method, path, body=None, timeout=30.0):
        url = "http://127.0.0.1:%d%s" % (self.port, path)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                v = json.loads(raw).get("value", {})
                raise WebDriverError("%s %s: %s: %s" % (method, path, v.get("error"),
                                                        v.get("message", "")[:500]))
            except ValueError:
                raise WebDriverError("%s %s: HTTP %d %r" % (method, path, e.code, raw[:300]))
        return json.loads(raw).get("value") if raw else None

    def _s(self, method, path, body=None, timeout=30.0):
        return self._call(method, "/session/%s%s" % (self.session, path), body, timeout)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.quit()
        return False

    def start(self):
        driver, chromium = driver_path(), chromium_path()
        if not driver or not chromium:
            raise WebDriverError("chromium or chromedriver missing (apt-get install chromium "
                                 "chromium-driver; deploy/install-deps.sh does)")
        self.port = free_port()
        log = open(os.path.join(self.work_dir, "chromedriver.log"), "w")
        env = dict(os.environ, HOME=self.profile)
        self.proc = subprocess.Popen([driver, "--port=%d" % self.port],
                                     stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                if (self._call("GET", "/status", timeout=2) or {}).get("ready"):
                    break
            except (OSError, WebDriverError, ValueError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise WebDriverError("chromedriver did not start (see %s/chromedriver.log)"
                                     % self.work_dir)
            time.sleep(0.2)
        args = ["--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-dev-shm-usage",
                "--user-data-dir=%s" % self.profile, "--window-size=%d,%d" % self.size]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # chromium's sandbox refuses to run as root
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "timeouts": {"pageLoad": 30000, "script": 10000, "implicit": 0},
        }}}
        v = self._call("POST", "/session", caps, timeout=self.start_timeout + 30)
        self.session = v["sessionId"]

    def quit(self):
        if self.session:
            try:
                self._s("DELETE", "", timeout=15)
            except (OSError, WebDriverError, ValueError):
                pass
            self.session = None
        if self.proc:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            self.proc = None
        shutil.rmtree(self.profile, ignore_errors=True)

    # --- commands ------------------------------------------------------------------------
    def get(self, url):
        self._s("POST", "/url", {"url": url}, timeout=45)

    def execute(self, script, *args):
        return self._s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find_all(self, css):
        return [e[ELEMENT] for e in self._s("POST", "/elements",
                                            {"using": "css selector", "value": css})]

    def text(self, element):
        return self._s("GET", "/element/%s/text" % element)

    def send_keys(self, element, text):
        self._s("POST", "/element/%s/value" % element, {"text": text})

    def click(self, element):
        self._s("POST", "/element/%s/click" % element, {})

    def wait(self, what, fn, timeout, period=0.25):
        """Calls fn() until it returns something truthy; raises after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            v = fn()
            if v:
                return v
            if time.monotonic() > deadline:
                raise WebDriverError("timed out after %.0fs waiting for %s" % (timeout, what))
            time.sleep(period)

    def visible(self, element_id):
        return self.execute("const e = document.getElementById(arguments[0]);"
                            "return !!e && !e.hidden && e.offsetParent !== null;", element_id)

    def fit_page(self, max_height=4000):
        """Makes the window as tall as the page (bounded), so a screenshot shows all of it."""
        h = self.execute("return document.documentElement.scrollHeight;") or self.size[1]
        self._s("POST", "/window/rect", {"width": self.size[0],
                                          "height": min(max_height, int(h) + 140)})

    def screenshot(self, path, full=True):
        if full:
            self.fit_page()
        png = base64.b64decode(self._s("GET", "/screenshot", timeout=30))
        with open(path, "wb") as f:
            f.write(png)
        return len(png)
