#!/usr/bin/env python3
"""Purger for scripts/bench-freshness: POSTs {"url": URL} (with "soft": true if asked) to
http://127.0.0.1:PORT/PATH every INTERVAL ms, COUNT times, on a fixed schedule (a late purge
does not shift the next ones), over one keep-alive connection. Prints one line:
    purges=<answered 200> errors=<other answers or failures> span_s=<first to last purge>

    freshness-purger.py PORT PATH URL COUNT INTERVAL_MS [soft]
"""
import http.client
import json
import sys
import time


def main():
    port, path, url = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    count, interval = int(sys.argv[4]), int(sys.argv[5]) / 1000.0
    soft = len(sys.argv) > 6 and sys.argv[6] == "soft"
    body = {"url": url}
    if soft:
        body["soft"] = True
    data = json.dumps(body)
    hdrs = {"Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    ok = errors = 0
    t0 = time.monotonic()
    first = last = None
    for i in range(count):
        due = t0 + i * interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        try:
            conn.request("POST", path, body=data, headers=hdrs)
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                ok += 1
            else:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        last = time.monotonic()
        if first is None:
            first = last
    print("purges=%d errors=%d span_s=%.3f" % (ok, errors, (last or 0) - (first or 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
