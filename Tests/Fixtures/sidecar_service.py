"""A service that knows nothing of Switchboard, for the sidecar's tests: run under `switchboard sidecar -- ...`.

Usage: sidecar_service.py PORT MARKER_FILE
GET /health  200 "ok", or 500 "broken" after GET /break
On SIGTERM it appends "sigterm <time.time()>" to MARKER_FILE and exits 0, so a test can tell when it was told to stop.
"""
import http.server
import signal
import sys
import time

port, marker = int(sys.argv[1]), sys.argv[2]
broken = False


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        global broken
        if self.path == "/break":
            broken = True
        status, text = (500, b"broken") if broken and self.path == "/health" else (200, b"ok")
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args):
        pass


def stop(*_):
    with open(marker, "a") as file:
        file.write(f"sigterm {time.time()}\n")
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.serve_forever()
