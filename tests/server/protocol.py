#!/usr/bin/python3
"""HTTP/1.1 protocol edges of a running shoplens server, over raw sockets (tests/e2e_server.sh).

Usage: protocol.py URL API_KEY HEAD_TIMEOUT IMAGE

Checks, each one a defect libmicrohttpd 0.9.75 alone had:
  - malformed or ambiguous request heads (Content-Length -1 or 10^23, Content-Length with
    Transfer-Encoding, HTTP/1.1 without Host, two Hosts) get exactly one complete JSON answer
    (no doubled header block) and the connection is closed;
  - PUT /v1/products/%ff (an id that is not UTF-8) is refused with 400;
  - a chunked body over --max-body gets 413 JSON while the client is still sending;
  - a client dripping its head or its body is answered 408 and closed within HEAD_TIMEOUT
    (+ slack), and counted in /metrics;
  - 32 dripping clients do not make a search wait.
"""
import json
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request

url, key, head_timeout, image = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
u = urllib.parse.urlsplit(url)
addr = (u.hostname, u.port)


failures = []


def fail(msg):
    """Records a failure and goes on: every defect is reported, not only the first."""
    failures.append(msg)
    print("protocol: FAIL: " + msg, file=sys.stderr)


def read_all(s, timeout=5.0):
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
    except (socket.timeout, ConnectionError):
        pass
    return data


def one_answer(raw, status, code):
    s = socket.create_connection(addr, timeout=5)
    s.sendall(raw)
    data = read_all(s)
    s.close()
    lines = data.count(b"\r\nHTTP/1.") + data.startswith(b"HTTP/1.")
    if lines != 1:
        return fail(f"{raw[:60]!r}: {lines} status lines in {data[:300]!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    if int(head[9:12]) != status:
        return fail(f"{raw[:60]!r}: status {head[9:12]!r}, expected {status}: {body[:200]!r}")
    cl = [int(h.split(b":", 1)[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
    if cl != [len(body)]:
        return fail(f"{raw[:60]!r}: Content-Length {cl} for a body of {len(body)} bytes (something follows it?)")
    try:
        err = json.loads(body)["error"]
    except (ValueError, KeyError):
        return fail(f"{raw[:60]!r}: not a JSON error: {body[:200]!r}")
    if err["code"] != code or not err["message"]:
        fail(f"{raw[:60]!r}: error {err}")


def metric(name):
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return 0.0


# ---- malformed and ambiguous heads ----------------------------------------------------------------
H = b"Host: x\r\n"
one_answer(b"POST /v1/search HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400, "bad_request")
one_answer(b"POST /v1/search HTTP/1.1\r\n" + H + b"Content-Length: 100000000000000000000000\r\n\r\n", 413, "payload_too_large")
one_answer(b"POST /v1/search HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_request")
one_answer(b"GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_request")
one_answer(b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "bad_request")
one_answer(b"PUT /v1/products/%ff HTTP/1.1\r\n" + H + b"Authorization: Bearer " + key.encode() +
           b"\r\nContent-Length: 0\r\n\r\n", 400, "bad_request")
print("protocol: malformed heads checked")

# ---- a chunked body over the limit: 413 while still sending -----------------------------------------
s = socket.create_connection(addr, timeout=5)
s.sendall(b"POST /v1/search HTTP/1.1\r\n" + H + b"Content-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n")
chunk = b"10000\r\n" + b"x" * 65536 + b"\r\n"
s.setblocking(False)
sent, got = 0, b""
t0 = time.time()
while time.time() - t0 < 20 and not got:
    try:
        got = s.recv(65536)
        break
    except BlockingIOError:
        pass
    try:
        sent += s.send(chunk)
    except BlockingIOError:
        time.sleep(0.01)
    except ConnectionError:
        break
s.setblocking(True)
got += read_all(s)
s.close()
if not got.startswith(b"HTTP/1.1 413") or b'"payload_too_large"' not in got:
    fail(f"chunked body over the limit ({sent} bytes sent): {got[:200]!r}")
else:
    print(f"protocol: chunked body over the limit: 413 after {sent >> 10} KiB")

# ---- slow clients ----------------------------------------------------------------------------------
time.sleep(head_timeout + 1)  # connections stalled by earlier tests reach their deadlines first
head_before = metric('shoplens_http_slow_clients_closed_total{phase="head"}')
body_before = metric('shoplens_http_slow_clients_closed_total{phase="body"}')


def drip(first, results, i, limit):
    s = socket.create_connection(addr, timeout=5)
    s.sendall(first)
    s.settimeout(0.1)
    t0, got = time.time(), b""
    while time.time() - t0 < limit:
        try:
            s.send(b"a")
        except OSError:
            break
        try:
            c = s.recv(4096)
            if not c:
                break
            got += c
        except socket.timeout:
            pass
        except OSError:
            break
    results[i] = (time.time() - t0, got)
    s.close()


res = {}
heads = [b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ",
         b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000\r\n\r\n"]
threads = [threading.Thread(target=drip, args=(heads[i % 2], res, i, head_timeout + 20)) for i in range(32)]
for t in threads:
    t.start()
time.sleep(0.3)
t0 = time.time()
body = open(image, "rb").read()
req = urllib.request.Request(url + "/v1/search?k=3", data=body, headers={"Content-Type": "image/jpeg"})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        if r.status != 200:
            fail(f"search among drippers: {r.status}")
except OSError as e:
    fail(f"search among drippers: {e}")
search_s = time.time() - t0
for t in threads:
    t.join()
bad = [(i, secs, got) for i, (secs, got) in sorted(res.items())
       if not got.startswith(b"HTTP/1.1 408") or b'"request_timeout"' not in got or secs > head_timeout + 5]
for i, secs, got in bad[:4]:
    fail(f"dripper {i} ({heads[i % 2][:20]!r}...): after {secs:.1f} s got {got[:120]!r} "
         f"(expected 408 within {head_timeout} s + 5 s)")
dh = metric('shoplens_http_slow_clients_closed_total{phase="head"}') - head_before
db = metric('shoplens_http_slow_clients_closed_total{phase="body"}') - body_before
if dh != 16 or db != 16:
    fail(f"slow clients counted head {dh}, body {db}; expected 16 and 16")
if not bad:
    print(f"protocol: 32 drippers answered 408 within {max(v[0] for v in res.values()):.1f} s, "
          f"counted in /metrics; a search among them took {search_s:.2f} s")
if search_s > 5:
    fail(f"a search among drippers took {search_s:.1f} s")
if failures:
    sys.exit(f"protocol: {len(failures)} failure(s)")
