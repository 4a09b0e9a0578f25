#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/<harness>/ (docs/fuzzing.md).

Seeds are small, hand-made, realistic inputs in the harnesses' layout
(tests/fuzz/fuzz_input.hpp): one flags byte, then records of
dir(1) length(2, big-endian) data. A byte stream is cut into a few pieces
the way a socket might deliver it. The signaling seeds carry a real login
signed with a fresh Ed25519 key over the harness's fixed nonce.

Seeds named regression-* are inputs that once found a bug; this script
never touches them. Run it from anywhere: python3 tests/fuzz/make_corpus.py
"""
import base64
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def records(flags, pieces):
    """pieces: list of (dir, bytes)."""
    out = bytes([flags])
    for d, data in pieces:
        out += bytes([d]) + struct.pack(">H", len(data)) + data
    return out


def cut(data, *sizes, d=0):
    """data cut after each size in sizes (the rest in one last piece)."""
    out, i = [], 0
    for n in sizes:
        out.append((d, data[i:i + n]))
        i += n
    if i < len(data):
        out.append((d, data[i:]))
    return out


def write(harness, name, data):
    path = os.path.join(CORPUS, harness)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, name), "wb") as f:
        f.write(data)


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


# -- protobuf, just enough to write the seeds ---------------------------------

def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_varint(num, n):
    return varint(num << 3) + varint(n)


# -- frames --------------------------------------------------------------------

def frames_seeds():
    hello = b"hello"
    two = frame(hello) + frame(b"") + frame(b"x" * 300)
    write("frame", "one-frame", records(0, cut(frame(hello))))
    write("frame", "split-header", records(0, cut(two, 2, 3, 100)))
    write("frame", "too-large", records(0, cut(frame(hello) + b"\x00\x01\x00\x01" + b"z" * 10, 7)))
    write("frame", "small-limit", records(2 * 16 + 1, cut(frame(b"a" * 16) + frame(b"b" * 17), 5)))


# -- StreamOpen -----------------------------------------------------------------

def stream_open(resource, protocol, client, version=1, source_bytes=0):
    out = field_bytes(1, resource) + field_bytes(2, protocol) + field_bytes(3, client)
    out += field_varint(4, version)
    if source_bytes:
        out += field_varint(5, source_bytes)
    return out


def preamble_seeds():
    rtsp = frame(stream_open("cam1", "rtsp", "127.0.0.1:51234")) + \
        b"DESCRIBE rtsp://127.0.0.1:8554/cam1 RTSP/1.0\r\nCSeq: 2\r\n\r\n"
    write("preamble", "rtsp-open", records(0, cut(rtsp, 3, 20)))
    write("preamble", "source-open", records(0, cut(frame(stream_open("source", "tcp", "127.0.0.1:40000", 1, 1 << 20)))))
    result_ok = frame(b"")  # StreamOpenResult{OK}
    write("preamble", "result-ok", records(0, cut(result_ok + b"HTTP/1.1 200 OK\r\n\r\n", 4)))
    denied = frame(field_varint(1, 2) + field_bytes(2, "denied by the export's allow list"))
    write("preamble", "result-denied", records(0, cut(denied, 1, 1, 1, 1)))
    write("preamble", "oversize", records(0, cut(b"\x00\x00\x40\x01" + b"\x0a" * 8)))


# -- signaling ------------------------------------------------------------------

def envelope(field, body):
    return field_bytes(field, body)


def signal_seeds():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    node_id = base64.b32encode(hashlib.sha256(spki).digest()).decode().rstrip("=").lower()
    nonce = (b"p2proxy-fuzz-nonce" * 2)[:32]  # fuzz_signal.cpp's fixed nonce
    binding = b"\x5a" * 32  # fuzz_signal.cpp's stand-in for the TLS channel binding
    sig = key.sign(b"p2proxy-login-v2" + binding + nonce + node_id.encode())
    login = field_bytes(1, node_id) + field_bytes(2, spki) + field_bytes(3, sig) + \
        field_bytes(4, "fuzz-network-token") + field_bytes(5, "0.1.0")
    hello = field_bytes(1, nonce) + field_bytes(2, "p2proxy 0.1.0") + field_varint(3, 15)
    login_ok = field_bytes(1, node_id) + field_bytes(2, "127.0.0.1:40312") + field_varint(3, 15)
    register = field_bytes(1, "cam1") + field_bytes(1, "web") + field_bytes(1, "ssh")
    lookup = field_varint(1, 7) + field_bytes(2, "cam1")
    other = "3jvo6zqs4q2kk5oqhq7wdmjnrqc6x7hxhsthnuxu4j3bf5hxezqa"
    lookup_result = field_varint(1, 7) + field_bytes(2, "cam1") + field_bytes(3, other)
    ice = field_bytes(1, "aBcD") + field_bytes(2, "0123456789abcdefghijkl") + \
        field_bytes(3, "candidate:1 1 UDP 2015363327 192.168.1.20 40000 typ host") + \
        field_bytes(3, "candidate:2 1 UDP 1679819007 203.0.113.7 40000 typ srflx raddr 192.168.1.20 rport 40000")
    offer = field_bytes(1, other) + field_varint(3, 42) + field_bytes(4, ice)
    probe = field_bytes(1, other) + field_bytes(2, node_id) + field_varint(3, 9) + \
        field_bytes(10, field_varint(1, 12345))
    error = field_varint(1, 9) + field_bytes(2, "node is offline") + field_bytes(4, other) + field_varint(5, 42)
    ping = field_varint(1, 3)

    server_in = frame(envelope(2, login)) + frame(envelope(4, register)) + \
        frame(envelope(5, lookup)) + frame(envelope(7, offer)) + frame(envelope(8, ping))
    write("signal", "node-to-server", records(0, cut(server_in, 5, 60, 200)))
    write("signal", "login-only", records(0, cut(frame(envelope(2, login)))))
    node_in = frame(envelope(1, hello)) + frame(envelope(3, login_ok)) + \
        frame(envelope(6, lookup_result)) + frame(envelope(7, probe)) + frame(envelope(10, error)) + \
        frame(envelope(9, ping))
    write("signal", "server-to-node", records(0, cut(node_in, 10, 40)))
    write("signal", "bad-envelope", records(0, cut(frame(b"\xff\xff\xff"))))


# -- HTTP -----------------------------------------------------------------------

HTTP_GET = (b"GET /r/web/index.html?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
            b"User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n")
HTTP_HOST = (b"GET /status HTTP/1.1\r\nHost: cam1.localhost:8080\r\n"
             b"Connection: keep-alive\r\n\r\n")
HTTP_POST = (b"POST /r/web/api HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
             b"Content-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"on\": true}\n")
HTTP_CHUNKED = (b"PUT /r/web/upload HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n")
HTTP_WS = (b"GET /r/web/ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: Upgrade\r\n"
           b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")
HTTP_ABS = b"GET http://web.localhost/page HTTP/1.0\r\n\r\n"
HTTP_REDIRECT = b"GET /r/web?a=b HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
HTTP_OTHER = b"GET /r/cam2/x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"


def http_seeds():
    write("http", "get-prefix", records(0, cut(HTTP_GET, 10, 30)))
    write("http", "host-keepalive", records(0, cut(HTTP_HOST + HTTP_HOST.replace(b"/status", b"/other"), 50)))
    write("http", "post-body", records(4, cut(HTTP_POST, 70)))
    write("http", "chunked", records(2, cut(HTTP_CHUNKED, 90, 3)))
    write("http", "websocket", records(0, cut(HTTP_WS)))
    write("http", "absolute-form", records(1, cut(HTTP_ABS)))
    write("http", "redirect", records(0, cut(HTTP_REDIRECT)))
    write("http", "second-resource", records(0, cut(HTTP_GET + HTTP_OTHER, len(HTTP_GET))))
    big = HTTP_GET.replace(b"Accept:", b"Cookie: " + b"a=b; " * 3400 + b"\r\nAccept:")
    write("http", "head-too-large", records(0, cut(big, 8000)))
    write("http", "route", records(1, [(0, b"/r/web/a"), (0, b"web.localhost:80")]))


# -- RTSP -----------------------------------------------------------------------

SDP = (b"v=0\r\no=- 0 0 IN IP4 192.168.1.10\r\ns=cam\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
       b"a=control:rtsp://192.168.1.10:554/stream/\r\n"
       b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
       b"a=control:rtsp://192.168.1.10:554/stream/trackID=1\r\n")


def rtsp_session():
    c = []
    c.append((0, b"OPTIONS rtsp://127.0.0.1:8554/cam1/stream RTSP/1.0\r\nCSeq: 1\r\n"
                 b"User-Agent: LibVLC/3.0.18\r\n\r\n"))
    c.append((1, b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: OPTIONS, DESCRIBE, SETUP, TEARDOWN, PLAY\r\n\r\n"))
    c.append((0, b"DESCRIBE rtsp://127.0.0.1:8554/cam1/stream RTSP/1.0\r\nCSeq: 2\r\n"
                 b"Accept: application/sdp\r\n\r\n"))
    c.append((1, b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Base: rtsp://192.168.1.10:554/stream/\r\n"
                 b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(SDP) + SDP))
    c.append((0, b"SETUP rtsp://127.0.0.1:8554/cam1/stream/trackID=1 RTSP/1.0\r\nCSeq: 3\r\n"
                 b"Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n"))
    c.append((1, b"RTSP/1.0 200 OK\r\nCSeq: 3\r\nTransport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
                 b"Session: 12345678;timeout=60\r\n\r\n"))
    c.append((0, b"PLAY rtsp://127.0.0.1:8554/cam1/stream/ RTSP/1.0\r\nCSeq: 4\r\nSession: 12345678\r\n"
                 b"Range: npt=0.000-\r\n\r\n"))
    c.append((1, b"RTSP/1.0 200 OK\r\nCSeq: 4\r\nSession: 12345678\r\n"
                 b"RTP-Info: url=rtsp://192.168.1.10:554/stream/trackID=1;seq=1;rtptime=0\r\n\r\n"
                 b"$\x00\x00\x0c\x80\x60\x00\x01\x00\x00\x00\x00\x12\x34\x56\x78"))
    c.append((0, b"$\x01\x00\x04abcd"))
    c.append((0, b"TEARDOWN rtsp://127.0.0.1:8554/cam1/stream/ RTSP/1.0\r\nCSeq: 5\r\nSession: 12345678\r\n\r\n"))
    return c


def rtsp_seeds():
    session = rtsp_session()
    write("rtsp", "vlc-session", records(0, session))
    first = session[0][1]
    write("rtsp", "options-split", records(0, cut(first, 8, 30)))
    udp = (b"SETUP rtsp://127.0.0.1:8554/cam1/stream/trackID=1 RTSP/1.0\r\nCSeq: 3\r\n"
           b"Transport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n")
    both = (b"SETUP rtsp://127.0.0.1:8554/cam1/stream/trackID=1 RTSP/1.0\r\nCSeq: 3\r\n"
            b"Transport: RTP/AVP;unicast;client_port=5000-5001,RTP/AVP/TCP;unicast;interleaved=0-1\r\n\r\n")
    write("rtsp", "setup-udp", records(0, [(0, udp)]))
    write("rtsp", "setup-both", records(2, [(0, both)]))
    big = first.replace(b"User-Agent:", b"X-Pad: " + b"p" * 17000 + b"\r\nUser-Agent:")
    write("rtsp", "head-too-large", records(0, cut(big, 9000)))
    write("rtsp", "options-star", records(1, [(0, b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n")]))
    write("rtsp", "rtsp2-userinfo", records(4, [(0, b"DESCRIBE rtsp://admin:pw@127.0.0.1:8554/cam1 RTSP/2.0\r\n"
                                                   b"CSeq: 7\r\nAuthorization: Basic YWRtaW46cHc=\r\n\r\n")]))


# -- SOCKS5 ---------------------------------------------------------------------

def socks5_seeds():
    greet = b"\x05\x01\x00"
    name = b"cam1.localhost"
    req = b"\x05\x01\x00\x03" + bytes([len(name)]) + name + b"\x22\xb8"
    write("socks5", "connect-domain", records(0, [(0, greet), (0, req)]))
    write("socks5", "connect-one-piece", records(0, [(0, greet + req + b"GET / HTTP/1.1\r\n\r\n")]))
    write("socks5", "connect-byte-by-byte", records(0, cut(greet + req, *([1] * (len(greet + req) - 1)))))
    write("socks5", "connect-ipv4", records(0, [(0, b"\x05\x02\x00\x02"), (0, b"\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90")]))
    write("socks5", "bind", records(0, [(0, greet), (0, b"\x05\x02\x00\x03\x03web\x00\x50")]))
    write("socks5", "socks4", records(0, [(0, b"\x04\x01\x00\x50\x7f\x00\x00\x01user\x00")]))
    write("socks5", "no-acceptable-method", records(0, [(0, b"\x05\x01\x02")]))


# -- adapters -------------------------------------------------------------------

def adapter_seeds():
    session = rtsp_session()
    # Client side RTSP (3): the sniff, then the stream both ways.
    write("adapter", "rtsp-client", records(3 | 8, session))
    # Exporting side RTSP (4|3): stream → target is dir 0, target → stream dir 1.
    write("adapter", "rtsp-export", records(4 | 3, session))
    write("adapter", "http-client", records(2, [(0, HTTP_GET), (1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
                                                (0, HTTP_POST), (0, HTTP_OTHER)]))
    write("adapter", "http-export", records(4 | 2, [(0, HTTP_HOST), (1, b"HTTP/1.1 204 No Content\r\n\r\n"),
                                                    (0, HTTP_CHUNKED)]))
    greet = b"\x05\x01\x00"
    req = b"\x05\x01\x00\x03\x03ssh\x00\x16"
    write("adapter", "socks5-client", records(1, [(0, greet), (0, req), (0, b"SSH-2.0-OpenSSH_9.2\r\n"),
                                                  (1, b"SSH-2.0-OpenSSH_9.2\r\n")]))
    write("adapter", "tcp", records(0, [(0, b"hello"), (1, b"world")]))


# -- config ---------------------------------------------------------------------

NODE_TOML = b'''[node]
key = "node.key"

[signal]
server = "198.18.0.10:7000"
token_file = "network.token"
heartbeat = "15s"
dead_after = "45s"

[ice]
stun = ["198.18.0.10:3478"]
turn = [{ server = "198.18.0.10:3478", user = "u", password = "p" }]

[session]
idle_linger = "30s"
congestion_control = "cubic"

[admin]
listen = "127.0.0.1:7070"

[log]
level = "info"

[[export]]
name = "cam1"
target = "192.168.1.10:554"
protocol = "rtsp"
allow = ["*"]

[[export]]
name = "ssh"
target = "127.0.0.1:22"
allow = ["3jvo6zqs4q2kk5oqhq7wdmjnrqc6x7hxhsthnuxu4j3bf5hxezqa"]

[[listen]]
bind = "127.0.0.1:8554"
protocol = "rtsp"

[[listen]]
bind = "127.0.0.1:2222"
protocol = "tcp"
resource = "ssh"
peer = "3jvo6zqs4q2kk5oqhq7wdmjnrqc6x7hxhsthnuxu4j3bf5hxezqa"
'''

MINIMAL_TOML = b'''[signal]
server = "127.0.0.1:7000"
token = "network-secret"

[[listen]]
bind = "127.0.0.1:1080"
protocol = "socks5"
'''


def config_seeds():
    write("config", "node.toml", NODE_TOML)
    write("config", "minimal.toml", MINIMAL_TOML)
    write("config", "typo.toml", MINIMAL_TOML.replace(b"server", b"sever"))
    write("config", "debug.toml", MINIMAL_TOML + b'\n[debug]\ntest_resources = true\n[session]\n'
                                  b'stream_window = 1048576\nkeepalive = "5s"\n')


def admin_seeds():
    status = b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1:7070\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
    write("admin", "status", records(0, [(0, status)]))
    write("admin", "status-bytewise", records(0, cut(status, *([1] * 20))))
    write("admin", "lookup-query", records(0, [(0, b"GET /v1/lookup/cam%201?x=a+b&y=%zz HTTP/1.1\r\n"
                                                  b"Authorization: Bearer s3cret\r\n\r\n")]))
    write("admin", "post-body", records(1, [(0, b"POST /v1/x HTTP/1.1\r\nContent-Length: 40\r\n\r\n")]))
    write("admin", "many-fields", records(1, [(0, b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 8 + b"\r\n")]))
    write("admin", "long-line", records(1, [(0, b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n\r\n")]))


if __name__ == "__main__":
    frames_seeds()
    preamble_seeds()
    signal_seeds()
    http_seeds()
    rtsp_seeds()
    socks5_seeds()
    adapter_seeds()
    config_seeds()
    admin_seeds()
