#!/usr/bin/python3
"""A real RTSP server for the e2e tests (GStreamer's gst-rtsp-server through
python3-gi; run it with Debian's /usr/bin/python3, which has `gi`).

    rtsp_server.py PORT [--per-client] [--bind ADDRESS] [--size WIDTHxHEIGHT]
                   [--session-timeout SECONDS]

Serves rtsp://127.0.0.1:PORT/stream: a live 320x240 15 fps test picture,
H.264 over RTP. Prints "ready" once it listens; runs until killed.
--bind listens on another address (the Docker scenarios' camera host uses
0.0.0.0), --size changes the picture's size, --session-timeout the RTSP
session timeout the server announces and keeps (default 60 s).

By default every client shares one pipeline (like a camera's one encoder).
--per-client gives each client its own pipeline: GStreamer 1.22's shared
media can deadlock (every client then waits forever, new ones too) when
PLAYs with a Range header, which ffmpeg always sends, race with other
clients joining and leaving; the tests that start and stop many clients at
once use this."""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = ("( videotestsrc is-live=true ! "
            "video/x-raw,width=%d,height=%d,framerate=15/1 ! "
            "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! "
            "rtph264pay name=pay0 pt=96 )")


def option(name, default):
    args = sys.argv[2:]
    return args[args.index(name) + 1] if name in args[:-1] else default


def main():
    port = int(sys.argv[1])
    shared = "--per-client" not in sys.argv[2:]
    width, height = (int(n) for n in option("--size", "320x240").split("x"))
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(option("--bind", "127.0.0.1"))
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE % (width, height))
    factory.set_shared(shared)
    server.get_mount_points().add_factory("/stream", factory)
    timeout = int(option("--session-timeout", "0"))
    if timeout > 0:
        def on_client(_server, client):
            client.connect("new-session",
                           lambda _c, session: session.set_timeout(timeout))
        server.connect("client-connected", on_client)
    if server.attach(None) == 0:
        print("cannot listen on port", port, file=sys.stderr, flush=True)
        sys.exit(1)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
