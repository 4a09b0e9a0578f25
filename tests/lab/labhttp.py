#!/usr/bin/env python3
"""One bounded HTTP GET, for the lab tests: run it inside a namespace to reach a node's loopback
admin port (`ip netns exec PREFIX-hostA python3 labhttp.py URL`). Standard library only.

Prints one JSON line: {"status": HTTP status (0: no answer), "body": the parsed JSON body (or
the text when it is not JSON), "error": what went wrong when there was no answer, "seconds": t}.
Exit code 0 whenever something was printed.
"""
import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args()
    t0 = time.monotonic()
    out = {"status": 0, "body": None}
    try:
        with urllib.request.urlopen(a.url, timeout=a.timeout) as r:
            out["status"], raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        out["status"] = e.code
        try:
            raw = e.read()
        except Exception:  # the body may be cut off; the status is what matters
            raw = b""
    except Exception as e:  # refused, timeout, reset: no HTTP answer at all
        out["error"] = "%s: %s" % (type(e).__name__, e)
        raw = None
    if raw is not None:
        text = raw.decode("utf-8", "replace")
        try:
            out["body"] = json.loads(text)
        except ValueError:
            out["body"] = text
    out["seconds"] = round(time.monotonic() - t0, 3)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
