#!/usr/bin/python3
"""Plays an RTSP URL with GStreamer's rtspsrc over UDP only and counts the
decoded frames of the stream's first SECONDS (by their timestamps). The
jitter buffer waits 2 s, so a busy test machine's scheduling delays are
not counted as lost frames.

    gst_play.py URL SECONDS

Prints one JSON line: {"frames": N, "errors": [...]}. Run it with Debian's
/usr/bin/python3 (python3-gi); needs gstreamer1.0-plugins-good (rtspsrc),
-bad/-ugly (h264parse) and -libav (avdec_h264)."""
import json
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


def main():
    url, seconds = sys.argv[1], float(sys.argv[2])
    Gst.init(None)
    pipeline = Gst.parse_launch(
        f"rtspsrc name=src location={url} protocols=udp latency=2000 "
        "! rtph264depay ! h264parse ! avdec_h264 name=dec ! fakesink name=sink "
        "sync=false")
    state = {"first": None, "frames": 0, "errors": []}
    loop = GLib.MainLoop()
    limit = int(seconds * Gst.SECOND)

    def probe(_pad, info):
        pts = info.get_buffer().pts
        if pts == Gst.CLOCK_TIME_NONE:
            return Gst.PadProbeReturn.OK
        if state["first"] is None:
            state["first"] = pts
        if pts - state["first"] < limit:
            state["frames"] += 1
        else:
            GLib.idle_add(loop.quit)
        return Gst.PadProbeReturn.OK

    pipeline.get_by_name("sink").get_static_pad("sink").add_probe(
        Gst.PadProbeType.BUFFER, probe)

    def on_message(_bus, msg):
        if msg.type == Gst.MessageType.ERROR:
            err, _ = msg.parse_error()
            state["errors"].append(str(err))
            loop.quit()
        elif (msg.type == Gst.MessageType.WARNING
              and msg.src.get_name() == "dec"):
            err, _ = msg.parse_warning()
            state["errors"].append("decoder: " + str(err))
        elif msg.type == Gst.MessageType.EOS:
            loop.quit()

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    GLib.timeout_add_seconds(int(seconds) + 15, loop.quit)  # bounded
    pipeline.set_state(Gst.State.PLAYING)
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    print(json.dumps({"frames": state["frames"], "errors": state["errors"]}),
          flush=True)


if __name__ == "__main__":
    main()
