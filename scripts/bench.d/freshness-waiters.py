#!/usr/bin/env python3
"""Waiter latency for scripts/bench-freshness: N clients ask for one URL at the same instant,
right after it was purged (or, with --mode new, for a URL never asked before); one of them
fills it from a slow origin and the others wait for that fill. Per round it records when
each response completed (last body byte read; monotonic clock, one thread, one select loop
over the N connections) and its cache status header, then reports, over all rounds, each
waiter's completion minus the filler's completion.

    freshness-waiters.py --port P --path URL --n 32 --rounds R --mode hard|soft|new
                         [--purge /purge] [--header X-Cache-Status]
                         [--fill MISS,EXPIRED,REVALIDATED] [--wait COLLAPSED,HIT]
                         [--abort K --abort-ms MS]

With --abort K, the first K clients of each round (the first one sent usually becomes the
filler) close their connection MS ms after sending, as clients that give up do; the others'
figures are reported as usual (the filler is then whichever remaining client filled).

Prints one JSON object: waiters, after_filler_ms {median, p95, min, max}, waiter_ms (from
sending) median and p95, filler_ms median, fillers (responses with a --fill status) per
round, and the count of every status seen.
"""
import argparse
import http.client
import json
import math
import selectors
import socket
import sys
import time


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, math.ceil(p / 100.0 * len(xs)) - 1))  # nearest rank
    return xs[k]


def median(xs):
    if not xs:
        return None
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0


class Resp:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.head = None
        self.need = None
        self.chunked = False
        self.status = None
        self.cache = None
        self.done = None

    def feed(self, data, header):
        self.buf += data
        if self.head is None:
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return False
            self.head = self.buf[:i].decode("latin-1")
            body = self.buf[i + 4:]
            self.buf = body
            lines = self.head.split("\r\n")
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                n = name.strip().lower()
                if n == "content-length":
                    self.need = int(value.strip())
                elif n == "transfer-encoding" and "chunked" in value.lower():
                    self.chunked = True
                elif n == header:
                    self.cache = value.strip()
            if self.status in (204, 304):
                self.need = 0
        if self.chunked:
            return self.buf.endswith(b"0\r\n\r\n")
        if self.need is not None:
            return len(self.buf) >= self.need
        return False


def get(port, url, header):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", url)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status, r.getheader(header)


def purge(port, path, url, soft):
    body = {"url": url}
    if soft:
        body["soft"] = True
    err = None
    for _ in range(3):  # a worker that died mid-purge (see the report's crash column)
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("POST", path, body=json.dumps(body),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return
            err = "answered %d" % r.status
        except (OSError, http.client.HTTPException) as e:
            err = repr(e)
        time.sleep(0.1)
    raise SystemExit("purge of %s failed: %s" % (url, err))


def one_round(a, url):
    socks = []
    for _ in range(a.n):
        s = socket.create_connection(("127.0.0.1", a.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    if a.mode in ("hard", "soft"):
        purge(a.port, a.purge, url, a.mode == "soft")
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % url).encode()
    sel = selectors.DefaultSelector()
    resps = []
    aborted = False
    t_send = time.monotonic()
    for s in socks:
        try:
            s.sendall(req)
        except OSError:
            pass  # then read as incomplete
        s.setblocking(False)
        r = Resp(s)
        resps.append(r)
        sel.register(s, selectors.EVENT_READ, r)
    left = len(resps)
    deadline = t_send + 30
    while left and time.monotonic() < deadline:
        if a.abort and not aborted:
            wait_s = t_send + a.abort_ms / 1000.0 - time.monotonic()
            if wait_s <= 0:
                aborted = True
                for r in resps[:a.abort]:
                    if r.done is None:
                        sel.unregister(r.sock)
                        r.sock.close()
                        r.done = "aborted"
                        left -= 1
                continue
        else:
            wait_s = 1
        for key, _ in sel.select(timeout=min(1, max(wait_s, 0.001))):
            r = key.data
            try:
                data = r.sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError:  # reset: the worker serving it died
                data = b""
            now = time.monotonic()
            if not data:
                if r.done is None:
                    r.done = -1  # closed before the whole response
                sel.unregister(r.sock)
                left -= 1
                continue
            if r.done is None and r.feed(data, a.header):
                r.done = now
                sel.unregister(r.sock)
                left -= 1
    for r in resps:
        if r.done != "aborted":
            r.sock.close()
    return t_send, resps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--mode", choices=("hard", "soft", "new"), required=True)
    ap.add_argument("--purge", default="/purge")
    ap.add_argument("--header", default="X-Cache-Status")
    ap.add_argument("--fill", default="MISS,EXPIRED,REVALIDATED")
    ap.add_argument("--wait", default="COLLAPSED,HIT")
    ap.add_argument("--tag", default=str(int(time.time() * 1000)))
    ap.add_argument("--abort", type=int, default=0)
    ap.add_argument("--abort-ms", type=int, default=100)
    a = ap.parse_args()
    a.header = a.header.lower()
    fill = set(a.fill.split(","))
    wait = set(a.wait.split(","))

    if a.mode != "new":
        get(a.port, a.path, a.header)
        st, cs = get(a.port, a.path, a.header)
        if st != 200 or cs != "HIT":
            raise SystemExit("warming %s: second GET got %s %s" % (a.path, st, cs))
    after, waiter_ms, filler_ms, fillers, statuses, bad = [], [], [], [], {}, 0
    for i in range(a.rounds):
        url = a.path if a.mode != "new" else "%s-%s-%d" % (a.path, a.tag, i)
        t_send, resps = one_round(a, url)
        for r in resps:
            k = "aborted by the client" if r.done == "aborted" else "%s %s" % (r.status, r.cache)
            statuses[k] = statuses.get(k, 0) + 1
        resps = [r for r in resps if r.done != "aborted"]
        for r in resps:
            if r.done is None or r.done < 0:
                bad += 1
        fl = [r for r in resps if r.cache in fill and r.status == 200 and r.done and r.done > 0]
        ws = [r for r in resps if r.cache in wait and r.status == 200]
        fillers.append(len(fl))
        if not fl:
            continue
        f_done = min(r.done for r in fl)
        filler_ms.append((f_done - t_send) * 1000)
        for r in ws:
            if r.done and r.done > 0:
                after.append((r.done - f_done) * 1000)
                waiter_ms.append((r.done - t_send) * 1000)
        time.sleep(0.05)

    def rnd(v):
        return None if v is None else round(v, 2)

    print(json.dumps({
        "mode": a.mode,
        "rounds": a.rounds,
        "n": a.n,
        "waiters": len(after),
        "after_filler_ms": {"median": rnd(median(after)), "p95": rnd(pct(after, 95)),
                            "min": rnd(min(after) if after else None),
                            "max": rnd(max(after) if after else None)},
        "waiter_ms": {"median": rnd(median(waiter_ms)), "p95": rnd(pct(waiter_ms, 95))},
        "filler_ms": {"median": rnd(median(filler_ms))},
        "fillers": fillers,
        "incomplete": bad,
        "statuses": statuses,
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
