#!/usr/bin/python3
"""bench/server/drip.py URL N SECONDS - N slow clients against a shoplens server.

Each client opens a connection and sends a request head one byte every 100 ms, never finishing
it (a slowloris client); when the server closes the connection (408 at the head deadline, or
dropped when the server's pool of incomplete heads is full) it reconnects at once, so N such
connections are open all the time. Runs for SECONDS, then prints one JSON line: connections
opened, answers 408, connections closed without an answer, connect errors.
"""
import json
import resource
import socket
import sys
import time
import urllib.parse

u = urllib.parse.urlsplit(sys.argv[1])
addr = (u.hostname, u.port)
n, seconds = int(sys.argv[2]), float(sys.argv[3])
head = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Slow: " + b"a" * 1000000
stats = {"clients": n, "connections": 0, "answered_408": 0, "closed_silently": 0, "connect_errors": 0}
conns = {}  # socket -> [bytes sent, bytes received]


def connect():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    rc = s.connect_ex(addr)
    if rc not in (0, 115):  # 115: EINPROGRESS
        stats["connect_errors"] += 1
        s.close()
        return
    conns[s] = [0, b""]
    stats["connections"] += 1


def closed(s):
    got = conns.pop(s)[1]
    s.close()
    if got.startswith(b"HTTP/1.1 408"):
        stats["answered_408"] += 1
    else:
        stats["closed_silently"] += 1


for _ in range(n):
    connect()
end = time.time() + seconds
while time.time() < end:
    t0 = time.time()
    for s in list(conns):
        st = conns[s]
        try:
            st[0] += s.send(head[st[0]:st[0] + 1])
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            closed(s)
            continue
        try:
            d = s.recv(4096)
            if d:
                st[1] += d
            else:
                closed(s)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            closed(s)
    while len(conns) < n:
        before = len(conns)
        connect()
        if len(conns) == before:
            break
    time.sleep(max(0.0, 0.1 - (time.time() - t0)))
for s in list(conns):
    s.close()
ru = resource.getrusage(resource.RUSAGE_SELF)
stats["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 2)  # what the slow clients cost this machine
print(json.dumps(stats))
