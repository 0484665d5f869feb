#!/usr/bin/python3
"""Times one /metrics scrape while N clients hold connections open and send nothing
(even ones) or half a request line (odd ones): what an idle or slow client costs the
scrapes of prometheus-cpp's thread-per-connection HTTP server.

    /usr/bin/python3 bench/metrics_idle_clients.py PORT [N ...]
e.g. build/server/recserve --model_base_path=models/default --metrics_port=19190 &
     /usr/bin/python3 bench/metrics_idle_clients.py 19190 0 16 64
"""
import socket
import sys
import time


def scrape_with_idle_clients(port, n):
    held = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        if i % 2:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
        held.append(s)
    time.sleep(0.2)  # let the server take them first
    start = time.time()
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(600)
    s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    elapsed = time.time() - start
    for h in held:
        h.close()
    return elapsed, data.split(b"\r\n", 1)[0].decode()


def main():
    port = int(sys.argv[1])
    for n in [int(a) for a in sys.argv[2:]] or [0, 16]:
        elapsed, status = scrape_with_idle_clients(port, n)
        print(f"{n:4d} idle clients: scrape answered in {elapsed:7.2f} s ({status})")


if __name__ == "__main__":
    main()
