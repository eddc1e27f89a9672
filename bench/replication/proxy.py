#!/usr/bin/env python3
"""Counting reverse proxy in front of an S3 server (bench/replication.sh).

    proxy.py --upstream http://127.0.0.1:MOTO --port-file F --counts F.jsonl [--interval 10]

Listens on 127.0.0.1 (a port the OS picks, written to --port-file once listening) and
forwards every request verbatim to the upstream: method, path and query, headers (Host
included: clients sign for the proxy's host:port, the upstream sees the same Host, so SigV4
signatures stay valid) and body (Content-Length bodies streamed, chunked ones passed through
raw, chunk framing included). Responses come back the same way. Standard library only.

Counts, per "METHOD kind" (kind: object, part, list, bucket, multipart, batch-delete):
requests, request bytes (request line + headers, and body), response bytes (status line +
headers, and body), and the statuses. A JSON line with the cumulative counts and the time is
appended to --counts every --interval seconds, on SIGUSR1 (with "mark": the label read from
--mark-file when it exists), and on SIGTERM/SIGINT (then it exits).
"""
import argparse
import http.client
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailers", "upgrade"}


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_op = {}
        self.errors = 0

    def add(self, op, req_head, req_body, resp_head, resp_body, status):
        with self.lock:
            c = self.by_op.setdefault(op, {"requests": 0, "req_head_bytes": 0, "req_body_bytes": 0,
                                           "resp_head_bytes": 0, "resp_body_bytes": 0, "statuses": {}})
            c["requests"] += 1
            c["req_head_bytes"] += req_head
            c["req_body_bytes"] += req_body
            c["resp_head_bytes"] += resp_head
            c["resp_body_bytes"] += resp_body
            c["statuses"][str(status)] = c["statuses"].get(str(status), 0) + 1

    def snapshot(self):
        with self.lock:
            ops = json.loads(json.dumps(self.by_op))
            errors = self.errors
        tot = {k: sum(o[k] for o in ops.values()) for k in
               ("requests", "req_head_bytes", "req_body_bytes", "resp_head_bytes", "resp_body_bytes")}
        return {"time": time.time(), "ops": ops, "total": tot, "proxy_errors": errors}


def classify(method, target):
    u = urllib.parse.urlsplit(target)
    q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
    parts = [p for p in u.path.split("/") if p]
    if len(parts) <= 1:  # path style: /bucket, no key
        if method == "GET" and ("list-type" in q or "prefix" in q or "delimiter" in q or not q):
            return "GET list"
        if method == "POST" and "delete" in q:
            return "POST batch-delete"
        return f"{method} bucket"
    if "partNumber" in q and "uploadId" in q:
        return f"{method} part"
    if "uploads" in q or "uploadId" in q:
        return f"{method} multipart"
    return f"{method} object"


def make_handler(upstream_host, upstream_port, counts, timeout):
    local = threading.local()

    def conn():
        c = getattr(local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(upstream_host, upstream_port, timeout=timeout)
            local.conn = c
        return c

    def drop_conn():
        c = getattr(local, "conn", None)
        if c is not None:
            c.close()
        local.conn = None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _head_bytes(self):
            return len(self.requestline) + 2 + sum(len(k) + 2 + len(v) + 2 for k, v in self.headers.items()) + 2

        def _pass(self, c, left, where):
            """Sends the next `left` bytes of the request body upstream; their count."""
            sent = 0
            while left:
                b = self.rfile.read(min(left, 1 << 20))
                if not b:
                    raise ConnectionError(f"client closed {where}")
                c.send(b)
                sent += len(b)
                left -= len(b)
            return sent

        def _forward(self):
            method, target = self.command, self.path
            te = self.headers.get("Transfer-Encoding", "").lower()
            length = self.headers.get("Content-Length")
            req_body = 0
            c = conn()
            # A kept-alive upstream connection may have been closed meanwhile: retry once on a
            # fresh one, but only before any body byte was sent.
            for attempt in (0, 1):
                try:
                    c.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() in HOP:
                            continue
                        c.putheader(k, v)
                    c.endheaders()
                    break
                except (ConnectionError, OSError):
                    if attempt:
                        raise
                    drop_conn()
                    c = conn()
            if "chunked" in te:
                # Pass the chunked body through raw, framing included, up to the last chunk
                # and its trailers.
                while True:
                    line = self.rfile.readline(65537)
                    c.send(line)
                    req_body += len(line)
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while True:
                            t = self.rfile.readline(65537)
                            c.send(t)
                            req_body += len(t)
                            if t in (b"\r\n", b"\n", b""):
                                break
                        break
                    req_body += self._pass(c, size + 2, "mid-chunk")  # data and its CRLF
            elif length:
                req_body += self._pass(c, int(length), "mid-body")
            resp = c.getresponse()
            head = [(k, v) for k, v in resp.getheaders()]
            chunked = "chunked" in (resp.getheader("Transfer-Encoding") or "").lower()
            self.send_response_only(resp.status, resp.reason)
            resp_head = len(f"HTTP/1.1 {resp.status} {resp.reason}") + 2 + 2
            for k, v in head:
                if k.lower() in HOP or k.lower() == "transfer-encoding":
                    continue
                self.send_header(k, v)
                resp_head += len(k) + 2 + len(v) + 2
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
                resp_head += len("Transfer-Encoding: chunked\r\n")
            if resp.will_close:
                self.close_connection = True
            self.end_headers()
            resp_body = 0
            no_body = method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
            if not no_body:
                while True:
                    b = resp.read1(1 << 20) if chunked else resp.read(1 << 20)
                    if not b:
                        break
                    if chunked:
                        self.wfile.write(b"%x\r\n" % len(b) + b + b"\r\n")
                    else:
                        self.wfile.write(b)
                    resp_body += len(b)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
            else:
                resp.read()
            self.wfile.flush()
            if resp.will_close:
                drop_conn()
            counts.add(classify(method, target), self._head_bytes(), req_body, resp_head, resp_body, resp.status)

        def _handle(self):
            try:
                self._forward()
            except Exception as e:  # a client killed mid-request, an upstream failure
                drop_conn()
                with counts.lock:
                    counts.errors += 1
                self.close_connection = True
                print(f"proxy: {self.command} {self.path}: {type(e).__name__}: {e}", file=sys.stderr)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _handle

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--counts", required=True)
    ap.add_argument("--mark-file")
    ap.add_argument("--interval", type=float, default=10.0)
    a = ap.parse_args()
    up = urllib.parse.urlsplit(a.upstream)
    counts = Counts()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(up.hostname, up.port or 80, counts, 300))
    srv.daemon_threads = True
    out_lock = threading.Lock()

    def dump(mark=None):
        s = counts.snapshot()
        if mark:
            s["mark"] = mark
        with out_lock, open(a.counts, "a") as f:
            f.write(json.dumps(s, sort_keys=True) + "\n")

    def on_usr1(*_):
        mark = "usr1"
        if a.mark_file and os.path.exists(a.mark_file):
            with open(a.mark_file) as f:
                mark = f.read().strip() or mark
        threading.Thread(target=dump, args=(mark,)).start()

    def on_term(*_):
        dump("exit")
        os._exit(0)

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def ticker():
        while True:
            time.sleep(a.interval)
            dump()

    threading.Thread(target=ticker, daemon=True).start()
    dump("start")
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{srv.server_address[1]}\n")
    os.replace(tmp, a.port_file)
    srv.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
