#!/usr/bin/env python3
"""Slow origin for scripts/bench-freshness: answers GET /<delay_ms>/<max_age>/<name> after
<delay_ms> milliseconds with a fixed body of --size bytes, `Cache-Control: max-age=<max_age>`,
a constant strong ETag and Last-Modified, and a 304 (after the same delay) when the request's
If-None-Match names that ETag. HTTP/1.1 keep-alive, one thread per connection.

Every request is logged, as it arrives (before the delay), to --log as one line:
    <unix time, seconds with microseconds> <path> <status> <conditional: 1 or 0>

    freshness-origin.py --port P --log FILE [--size BYTES] [--pidfile FILE]
"""
import argparse
import http.server
import os
import socketserver
import sys
import threading
import time

ETAG = '"fresh-bench-1"'
LAST_MODIFIED = "Mon, 02 Nov 2026 00:00:00 GMT"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--size", type=int, default=10240)
    ap.add_argument("--pidfile")
    a = ap.parse_args()

    body = (b"0123456789abcdef" * (a.size // 16 + 1))[: a.size]
    log = open(a.log, "a", buffering=1)
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            t = time.time()
            parts = self.path.split("?", 1)[0].split("/")
            # ['', delay, max_age, name...]
            try:
                delay = int(parts[1]) / 1000.0
                max_age = int(parts[2])
            except (IndexError, ValueError):
                self.send_error(404)
                return
            inm = self.headers.get("If-None-Match")
            conditional = inm is not None and ETAG in [v.strip() for v in inm.split(",")]
            status = 304 if conditional else 200
            with lock:
                log.write("%.6f %s %d %d\n" % (t, self.path, status, 1 if inm else 0))
            if delay > 0:
                time.sleep(delay)
            self.send_response(status)
            self.send_header("Cache-Control", "max-age=%d" % max_age)
            self.send_header("ETag", ETAG)
            self.send_header("Last-Modified", LAST_MODIFIED)
            if status == 200:
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status == 200:
                self.wfile.write(body)

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 512

        def handle_error(self, request, client_address):
            # nginx closing or resetting an idle keep-alive connection is not an error here.
            if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                super().handle_error(request, client_address)

    srv = Server(("127.0.0.1", a.port), Handler)
    if a.pidfile:
        with open(a.pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
