"""A small HTTP backend for health-check tests, run as a real child process.

GET /health        200 "healthy", or the next queued failure status
GET /fail?count=N&status=S   queue N answers of status S (default 500) on /health
GET /stats         "served=N failed=M": /health answers so far
GET /stall         a 200 head and one byte of the body, then silence for 30 s
Prints the bound port on stdout, then serves until killed.
"""
import http.server
import sys
import threading
import time
import urllib.parse

lock = threading.Lock()
queued = []
served = 0
failed = 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        global served, failed
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/health":
            with lock:
                served += 1
                status = queued.pop(0) if queued else 200
                if status != 200:
                    failed += 1
            self.answer(status, "healthy" if status == 200 else "failing")
        elif url.path == "/forwarded-proto":
            # What a proxy in front said of the caller's scheme.
            self.answer(200, self.headers.get("X-Forwarded-Proto", "none"))
        elif url.path == "/fail":
            count = int(query.get("count", ["1"])[0])
            status = int(query.get("status", ["500"])[0])
            with lock:
                queued.extend([status] * count)
            self.answer(200, "queued")
        elif url.path == "/stall":
            # The head and one byte of a promised 1000-byte body, then nothing.
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(30)
        elif url.path == "/big":
            # A healthy page larger than a probe reads (100 KiB of a promised 1 MiB), then nothing.
            self.send_response(200)
            self.send_header("Content-Length", str(1024 * 1024))
            self.end_headers()
            self.wfile.write(b"status: ok\n" + b"x" * (100 * 1024))
            self.wfile.flush()
            time.sleep(30)
        elif url.path == "/stats":
            with lock:
                text = f"served={served} failed={failed}"
            self.answer(200, text)
        else:
            self.answer(404, "not found")

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
