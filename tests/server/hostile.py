#!/usr/bin/python3
"""Sends deterministic garbage to a running shoplens server: a valid multipart search request
mutated at random (request line, headers, boundary, body, image bytes, lengths), each on its own
connection. The server must answer each one with a well-formed HTTP status (or close the
connection) and still be healthy afterwards. Any 5xx other than 503, or a dead server, fails.

Usage: hostile.py URL IMAGE [COUNT]
"""
import concurrent.futures
import random
import socket
import sys
import urllib.parse
import urllib.request

url, image = sys.argv[1], sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 200
u = urllib.parse.urlsplit(url)
host, port = u.hostname, u.port
img = open(image, "rb").read()
b = b"XbOuNdArY"
body = (b"--" + b + b'\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + img + b"\r\n--" + b + b"--\r\n")
head = (b"POST /v1/search?k=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: multipart/form-data; boundary=" + b + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
base = head + body
rng = random.Random(1234)


def mutate():
    m = bytearray(base)
    for _ in range(rng.randint(1, 6)):
        if len(m) < 2:
            break
        op = rng.randrange(5)
        # bias towards the head and the start of the body, where the parsers are
        pos = rng.randrange(min(len(m), 400)) if rng.random() < 0.7 else rng.randrange(len(m))
        if op == 0:
            m[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            m[pos] = rng.choice(b"\x00\r\n-: ;=\"%\xff")
        elif op == 2:
            del m[pos:pos + rng.randint(1, 40)]
        elif op == 3:
            m[pos:pos] = m[rng.randrange(len(m)):][:rng.randint(1, 60)]
        else:
            m = m[:pos]
    return bytes(m)


def send(m):
    s = socket.create_connection((host, port), timeout=5)
    s.settimeout(1.0)
    data = b""
    try:
        s.sendall(m)
        s.shutdown(socket.SHUT_WR)
        while len(data) < 64:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionError):
        pass
    finally:
        s.close()
    ok = data.startswith(b"HTTP/1.") and len(data) >= 12 and data[9:12].isdigit()
    return (int(data[9:12]) if ok else 0), data[:300]


inputs = [mutate() for _ in range(count)]  # generated up front: deterministic
statuses = {}
with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
    for i, (code, data) in enumerate(pool.map(send, inputs)):
        statuses[code] = statuses.get(code, 0) + 1
        if code >= 500 and code != 503:
            sys.exit(f"hostile: request {i} got {code}: {data!r}")
with urllib.request.urlopen(url + "/healthz", timeout=10) as r:
    assert r.status == 200, r.status
print("hostile: %d mutated requests, statuses %s, server healthy" % (count, dict(sorted(statuses.items()))))
