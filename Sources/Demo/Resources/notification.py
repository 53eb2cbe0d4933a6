"""The demo's notification service: Python, standard library only, run under `switchboard sidecar`.

Usage: python3 notification.py PORT UPSTREAM_PORT

POST /notify {"orderId": ...} records a confirmed order's notification once (idempotent by order id, so a caller may
retry on another instance); GET /health is the sidecar's probe; GET /stats is the demo's count. After each new
notification it pings payment through its sidecar's --upstream listener at UPSTREAM_PORT, best-effort.
"""

import json
import os
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
lock = threading.Lock()
notified = set()
stats = {"requests": 0, "upstreamCalls": 0, "upstreamFailures": 0}


def ping_payment():
    # Through the sidecar: it finds a healthy payment instance. Best-effort: a failure is only counted.
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{upstream_port}/health", timeout=2) as answer:
            ok = answer.status == 200
    except OSError:
        ok = False
    with lock:
        stats["upstreamCalls" if ok else "upstreamFailures"] += 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            self.answer(200, {"status": "ok"})
        elif self.path == "/stats":
            with lock:
                self.answer(200, dict(stats, notified=len(notified), pid=os.getpid()))
        else:
            self.answer(404, {"error": "not_found"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/notify":
            self.answer(404, {"error": "not_found"})
            return
        try:
            order_id = json.loads(body)["orderId"]
        except (ValueError, KeyError, TypeError):
            self.answer(400, {"error": "invalid_argument", "message": "orderId is required"})
            return
        with lock:
            new = order_id not in notified
            notified.add(order_id)
            stats["requests"] += 1
        if new:
            threading.Thread(target=ping_payment, daemon=True).start()
        self.answer(200, {"orderId": order_id, "notified": True})

    def log_message(self, format, *args):
        pass


def exit_with_parent():
    # No orphan left serving: this process ends when its parent (the sidecar, or a launcher such as pyenv's) changes,
    # or when the demo that set SWITCHBOARD_PARENT_PID is gone, as the demo's other processes do.
    parent, demo = os.getppid(), int(os.environ.get("SWITCHBOARD_PARENT_PID", "0"))
    while os.getppid() == parent:
        if demo:
            try:
                os.kill(demo, 0)
            except ProcessLookupError:
                break
        time.sleep(0.2)
    os._exit(1)


threading.Thread(target=exit_with_parent, daemon=True).start()
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
