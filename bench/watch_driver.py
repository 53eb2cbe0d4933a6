#!/usr/bin/env python3
"""Propagation benchmark driver: how long a registration takes to reach every one of many watchers.

Usage: watch_driver.py MODE BASE_URL WATCHERS CHANGES
  MODE sse       WATCHERS Server-Sent Events streams on GET /v1/services/bench/watch
  MODE blocking  WATCHERS blocking queries GET /v1/services/bench?index=N&wait=60s, each re-armed on every answer
  MODE etcd      WATCHERS etcd watches (POST /v3/watch on etcd's JSON gateway) on the prefix bench/

Then it makes CHANGES changes one after another (a registration with the agent, a put with etcd), each once every
watcher has seen the previous one, and records for every (watcher, change) pair the time from just before the
change request was sent to the moment that watcher's connection delivered the change. Prints one JSON line:
{"mode", "watchers", "changes", "p50_ms", "p99_ms", "max_ms", "per_change_max_p50_ms", "missed"}.

Connections are raw asyncio protocols: the receive time is taken in data_received, before any parsing, so the
driver adds as little as Python allows; it still runs on the same 2 cores as the server and its per-event cost is
part of the figures (the same for both peers).
"""

import asyncio
import base64
import json
import re
import sys
import time
from urllib.parse import urlparse

ID_PATTERNS = {
    "sse": re.compile(rb"^id: (\d+)$", re.M),
    "etcd": re.compile(rb'"mod_revision":"(\d+)"'),
}
INDEX_HEADER = re.compile(rb"\r\nX-Switchboard-Index: (\d+)\r\n", re.I)


class StreamWatcher(asyncio.Protocol):
    """Reads a never-ending response and notes when each change id first arrives."""

    def __init__(self, pattern, seen_event):
        self.pattern = pattern
        self.buffer = b""
        self.arrivals = {}
        self.latest = 0
        self.seen_event = seen_event
        self.ready = asyncio.get_running_loop().create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        now = time.perf_counter()
        self.buffer += data
        cut = self.buffer.rfind(b"\n")
        if cut < 0:
            return
        complete, self.buffer = self.buffer[: cut + 1], self.buffer[cut + 1 :]
        for match in self.pattern.finditer(complete):
            index = int(match.group(1))
            self.arrivals.setdefault(index, now)
            self.latest = max(self.latest, index)
        if not self.ready.done() and (b"event: snapshot" in complete or b'"created":true' in complete):
            self.ready.set_result(True)
        self.seen_event.set()

    def connection_lost(self, exc):
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("stream closed"))


class BlockingWatcher(asyncio.Protocol):
    """Holds one blocking query at a time, re-armed with the answer's index as soon as it arrives."""

    def __init__(self, host, path, index, seen_event):
        self.host = host
        self.path = path
        self.index = index
        self.buffer = b""
        self.arrivals = {}
        self.latest = 0
        self.seen_event = seen_event
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.arm()

    def arm(self):
        request = f"GET {self.path}?index={self.index}&wait=60s HTTP/1.1\r\nHost: {self.host}\r\n\r\n"
        self.transport.write(request.encode())

    def data_received(self, data):
        now = time.perf_counter()
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[: head_end + 2]
            length = int(re.search(rb"\r\ncontent-length: (\d+)\r\n", head, re.I).group(1))
            if len(self.buffer) < head_end + 4 + length:
                return
            self.buffer = self.buffer[head_end + 4 + length :]
            index = int(INDEX_HEADER.search(head).group(1))
            if index > self.index:
                self.arrivals.setdefault(index, now)
                self.latest = max(self.latest, index)
                self.index = index
            self.arm()
            self.seen_event.set()


async def http_request(host, port, method, path, body=b"", headers=""):
    """One request on a fresh connection; returns (head, body)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: application/json\r\n{headers}Connection: close\r\n\r\n".encode() + body
    )
    data = await reader.read()
    writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n", rest


class Changer:
    """Makes changes on one kept-alive connection and returns the index each produced."""

    def __init__(self, mode, host, port):
        self.mode, self.host, self.port = mode, host, port

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def change(self, number):
        if self.mode == "etcd":
            key = base64.b64encode(f"bench/i{number}".encode()).decode()
            value = base64.b64encode(json.dumps({"address": "10.0.0.1", "port": 8080}).encode()).decode()
            path, body = "/v3/kv/put", json.dumps({"key": key, "value": value}).encode()
            method = "POST"
        else:
            path = f"/v1/services/bench/instances/i{number}"
            body = json.dumps({"address": "10.0.0.1", "port": 8080}).encode()
            method = "PUT"
        started = time.perf_counter()
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"\r\ncontent-length: (\d+)\r\n", head, re.I).group(1))
        payload = await self.reader.readexactly(length)
        if self.mode == "etcd":
            index = int(json.loads(payload)["header"]["revision"])
        else:
            index = int(INDEX_HEADER.search(head).group(1))
        return started, index


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * share + 0.999999) - 1))]


async def main():
    mode, base, watchers, changes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    url = urlparse(base)
    host, port = url.hostname, url.port
    loop = asyncio.get_running_loop()
    seen_event = asyncio.Event()
    connections = []

    # A first change, so that the service exists and a blocking query has an index above 0 to wait past.
    seeder = Changer(mode, host, port)
    await seeder.open()
    await seeder.change("seed")
    if mode == "blocking":
        head, _ = await http_request(host, port, "GET", "/v1/services/bench")
        start_index = int(INDEX_HEADER.search(head).group(1))
    for number in range(watchers):
        if mode == "sse":
            _, protocol = await loop.create_connection(
                lambda: StreamWatcher(ID_PATTERNS["sse"], seen_event), host, port)
            _.write(
                f"GET /v1/services/bench/watch?status=any HTTP/1.1\r\nHost: {host}\r\n"
                f"Accept: text/event-stream\r\n\r\n".encode())
        elif mode == "etcd":
            _, protocol = await loop.create_connection(
                lambda: StreamWatcher(ID_PATTERNS["etcd"], seen_event), host, port)
            prefix = base64.b64encode(b"bench/").decode()
            end = base64.b64encode(b"bench0").decode()
            body = json.dumps({"create_request": {"key": prefix, "range_end": end}}).encode()
            _.write(
                f"POST /v3/watch HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        else:
            _, protocol = await loop.create_connection(
                lambda: BlockingWatcher(host, "/v1/services/bench", start_index, seen_event), host, port)
        connections.append(protocol)
    if mode != "blocking":
        await asyncio.wait_for(asyncio.gather(*(c.ready for c in connections)), timeout=60)
    else:
        await asyncio.sleep(1)  # every query is held once the agent has read it

    changer = Changer(mode, host, port)
    await changer.open()
    latencies, per_change_max, missed = [], [], 0
    for number in range(changes):
        started, index = await changer.change(number)
        deadline = time.perf_counter() + 5
        while any(c.latest < index for c in connections) and time.perf_counter() < deadline:
            seen_event.clear()
            try:
                await asyncio.wait_for(seen_event.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
        worst = 0.0
        for connection in connections:
            arrived = connection.arrivals.get(index)
            if arrived is None:
                missed += 1
                continue
            latency = (arrived - started) * 1000
            latencies.append(latency)
            worst = max(worst, latency)
        per_change_max.append(worst)
        # Let blocking watchers re-arm before the next change, as they would between real changes.
        await asyncio.sleep(0.02)
    print(json.dumps({
        "mode": mode, "watchers": watchers, "changes": changes,
        "p50_ms": round(percentile(latencies, 0.5), 2), "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2), "per_change_max_p50_ms": round(percentile(per_change_max, 0.5), 2),
        "missed": missed,
    }))
    for connection in connections:
        if getattr(connection, "transport", None):
            connection.transport.close()


if __name__ == "__main__":
    try:
        import uvloop  # optional: a faster event loop makes the driver's own share smaller
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
