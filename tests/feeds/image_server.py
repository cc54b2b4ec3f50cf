#!/usr/bin/python3
"""A local HTTP server of product images and of the ways serving them goes wrong, for the tests
of feeds with image URLs (tests/test_store.c, tests/e2e_feeds.sh). Loopback only.

Usage: image_server.py DIR  -> prints "port N" on stdout once listening, serves until killed.

  /img/NAME            DIR/NAME with a Content-Type from its extension
  /delay/NAME          /img/NAME after half a second
  /redirect/NAME       302 to /img/NAME
  /loop/K              302 to /loop/K+1, for ever (a redirect loop)
  /missing/NAME        404
  /gone/NAME           410
  /html/NAME           an HTML page served as image/jpeg (the wrong type)
  /slow/NAME           the headers, then one byte of DIR/NAME every 0.5 s
  /big/NAME            Content-Length of 1 GiB, then bytes until the client goes away
  /bigchunked/NAME     chunked, no length, bytes until the client goes away
  /flaky/NAME          503 (Retry-After: 0) on the first request for this path, then /img/NAME
  /down/NAME           503 every time
  /ftp/NAME            302 to ftp://127.0.0.1/NAME (a protocol that is not fetched)
  /stats               JSON: requests per path so far, and "max_concurrent": the most requests
                       served at once
"""
import http.server
import json
import os
import socketserver
import sys
import threading
import time

root = os.path.abspath(sys.argv[1])
counts = {}
lock = threading.Lock()
active = [0, 0]  # requests being served, most at once
TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
         ".heic": "image/heic"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, code, body=b"", ctype="application/octet-stream", extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def file(self, name):
        p = os.path.normpath(os.path.join(root, name))
        if not p.startswith(root + os.sep) or not os.path.isfile(p):
            return None
        with open(p, "rb") as f:
            return f.read()

    def do_GET(self):
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
        try:
            self.answer()
        finally:
            with lock:
                active[0] -= 1

    def answer(self):
        path = self.path.split("?", 1)[0]
        with lock:
            counts[path] = counts.get(path, 0) + 1
            seen = counts[path]
        parts = path.strip("/").split("/", 1)
        kind, name = parts[0], parts[1] if len(parts) > 1 else ""
        ctype = TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")
        try:
            if kind == "stats":
                with lock:
                    body = json.dumps(dict(counts, max_concurrent=active[1])).encode()
                return self.send(200, body, "application/json")
            if kind == "delay":
                time.sleep(0.5)
            if kind in ("img", "delay") or (kind == "flaky" and seen > 1):
                data = self.file(name)
                return self.send(200, data, ctype) if data is not None else self.send(404, b"no such file")
            if kind == "flaky" or kind == "down":
                return self.send(503, b"try later", "text/plain", [("Retry-After", "0")])
            if kind == "redirect":
                return self.send(302, b"", extra=[("Location", "/img/" + name)])
            if kind == "loop":
                return self.send(302, b"", extra=[("Location", "/loop/%d" % (int(name or 0) + 1))])
            if kind == "ftp":
                return self.send(302, b"", extra=[("Location", "ftp://127.0.0.1/" + name)])
            if kind == "missing":
                return self.send(404, b"<html><body>not found</body></html>", "text/html")
            if kind == "gone":
                return self.send(410, b"gone", "text/plain")
            if kind == "html":
                return self.send(200, b"<!doctype html><html><body><img src='x.jpg'></body></html>", "image/jpeg")
            if kind == "slow":
                data = self.file(name) or b"x" * 1000
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                for i in range(len(data)):
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.5)
                return
            if kind in ("big", "bigchunked"):
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                if kind == "big":
                    self.send_header("Content-Length", str(1 << 30))
                else:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                block = b"\xff\xd8\xff" + b"\0" * 65533
                for _ in range(1 << 14):  # at most 1 GiB
                    if kind == "big":
                        self.wfile.write(block)
                    else:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                return
            return self.send(404, b"unknown")
        except (BrokenPipeError, ConnectionResetError):
            pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


srv = Server(("127.0.0.1", 0), Handler)
print("port", srv.server_address[1], flush=True)
srv.serve_forever()
