#!/usr/bin/env python3
"""Steps of bench/cluster.sh that need more than curl: propagation across agents, etcd's write history, failover.

  cluster_driver.py propagate MODE WRITE_BASE WATCH_BASE WATCHERS CHANGES
      MODE agents: WATCHERS Server-Sent Events streams (GET /v1/services/prop/watch?status=any) on WATCH_BASE (agent
      B); CHANGES registrations (PUT /v1/services/prop/instances/iN) through WRITE_BASE (agent A), one after another,
      each once every watcher has seen the previous one. MODE etcd, the peer: WATCHERS etcd watches (POST /v3/watch,
      prefix prop/) on one member, puts to another member. For every (watcher, change) pair it records the time from
      the write's acknowledgment (its answer fully read) to that watcher's connection delivering the change, and also
      from just before the write was sent. The change is matched by index: the write's X-Switchboard-Index (etcd: the
      put's header revision) against the stream's `id:` (etcd: the event's mod_revision). Reuses watch_driver.py's
      stream reader. Prints one JSON line.
  cluster_driver.py stats ETCD_BASE [ETCD_BASE...]
      etcd's revision (header of a range on the first base) and, from each member's /metrics, the counters that say
      what it wrote and served. Prints one JSON line.
  cluster_driver.py history ETCD_BASE FROM TO PREFIX
      Every revision in (FROM, TO], read back with a watch from FROM + 1 on the whole key space, grouped by what it
      touched (event type and key, the agents' PREFIX cut off and ids dropped). Prints one JSON line.
  cluster_driver.py failover SURVIVOR_BASE VICTIM_PID TTL_TOTAL HTTP_TOTAL TIMEOUT_S
      kill -9 VICTIM_PID, then polls the survivor's GET /v1/agent every 20 ms until its cluster members no longer list
      the victim and its health.checks counts reach TTL_TOTAL and HTTP_TOTAL. Prints one JSON line with the times.
"""

import asyncio
import base64
import http.client
import json
import os
import re
import signal
import sys
import time
from urllib.parse import urlparse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from watch_driver import ID_PATTERNS, INDEX_HEADER, StreamWatcher, percentile  # noqa: E402


def host_port(base):
    url = urlparse(base)
    return url.hostname, url.port


def b64(text):
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


# MARK: propagate

class Writer:
    """Writes one change at a time on a kept-alive connection; returns (sent, acknowledged, index)."""

    def __init__(self, mode, host, port):
        self.mode, self.host, self.port = mode, host, port

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def change(self, name):
        if self.mode == "etcd":
            value = b64(json.dumps({"address": "10.0.0.1", "port": 8080}))
            path, method = "/v3/kv/put", "POST"
            body = json.dumps({"key": b64(f"prop/{name}"), "value": value}).encode()
        else:
            path, method = f"/v1/services/prop/instances/{name}", "PUT"
            body = json.dumps({"address": "10.0.0.1", "port": 8080}).encode()
        sent = time.perf_counter()
        self.writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"\r\ncontent-length: (\d+)\r\n", head, re.I).group(1))
        payload = await self.reader.readexactly(length)
        acknowledged = time.perf_counter()
        status = int(head.split(b" ", 2)[1])
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {payload[:200]!r}")
        if self.mode == "etcd":
            index = int(json.loads(payload)["header"]["revision"])
        else:
            index = int(INDEX_HEADER.search(head).group(1))
        return sent, acknowledged, index


async def propagate(mode, write_base, watch_base, watchers, changes):
    loop = asyncio.get_running_loop()
    seen = asyncio.Event()
    whost, wport = host_port(watch_base)
    writer = Writer(mode, *host_port(write_base))
    await writer.open()
    await writer.change("seed")  # the service exists before the streams open
    pattern = ID_PATTERNS["etcd" if mode == "etcd" else "sse"]
    connections = []
    for _ in range(watchers):
        transport, protocol = await loop.create_connection(lambda: StreamWatcher(pattern, seen), whost, wport)
        if mode == "etcd":
            body = json.dumps({"create_request": {"key": b64("prop/"), "range_end": b64("prop0")}}).encode()
            transport.write(
                f"POST /v3/watch HTTP/1.1\r\nHost: {whost}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        else:
            transport.write(
                f"GET /v1/services/prop/watch?status=any HTTP/1.1\r\nHost: {whost}\r\n"
                f"Accept: text/event-stream\r\n\r\n".encode())
        connections.append(protocol)
    await asyncio.wait_for(asyncio.gather(*(c.ready for c in connections)), timeout=60)
    await asyncio.sleep(0.5)

    from_ack, from_send, per_change_max, missed = [], [], [], 0
    for number in range(changes):
        sent, acknowledged, index = await writer.change(f"i{number}")
        deadline = time.perf_counter() + 5
        while any(c.latest < index for c in connections) and time.perf_counter() < deadline:
            seen.clear()
            try:
                await asyncio.wait_for(seen.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
        worst = float("-inf")
        for connection in connections:
            arrived = connection.arrivals.get(index)
            if arrived is None:
                missed += 1
                continue
            from_ack.append((arrived - acknowledged) * 1000)
            from_send.append((arrived - sent) * 1000)
            worst = max(worst, (arrived - acknowledged) * 1000)
        if worst != float("-inf"):
            per_change_max.append(worst)
        await asyncio.sleep(0.02)
    for connection in connections:
        if connection.transport:
            connection.transport.close()
    if not from_ack:
        return {"mode": mode, "watchers": watchers, "changes": changes, "missed": missed}
    return {
        "mode": mode, "watchers": watchers, "changes": changes,
        "p50_ms": round(percentile(from_ack, 0.5), 2), "p99_ms": round(percentile(from_ack, 0.99), 2),
        "max_ms": round(max(from_ack), 2), "min_ms": round(min(from_ack), 2),
        "before_ack_share": round(sum(1 for x in from_ack if x < 0) / len(from_ack), 4),
        "send_p50_ms": round(percentile(from_send, 0.5), 2), "send_p99_ms": round(percentile(from_send, 0.99), 2),
        "send_max_ms": round(max(from_send), 2),
        "per_change_max_p50_ms": round(percentile(per_change_max, 0.5), 2) if per_change_max else None,
        "missed": missed, "deliveries": len(from_ack),
    }


# MARK: stats

def post(base, path, body, timeout=10):
    host, port = host_port(base)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"POST {base}{path}: {response.status} {data[:200]!r}")
    return json.loads(data)


def get(base, path, timeout=10):
    host, port = host_port(base)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    conn.request("GET", path)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


METRICS = {
    "put": re.compile(r"^etcd_mvcc_put_total (\S+)$", re.M),
    "delete": re.compile(r"^etcd_mvcc_delete_total (\S+)$", re.M),
    "txn": re.compile(r"^etcd_mvcc_txn_total (\S+)$", re.M),
    "range": re.compile(r"^etcd_mvcc_range_total (\S+)$", re.M),
    "proposals_committed": re.compile(r"^etcd_server_proposals_committed_total (\S+)$", re.M),
    "is_leader": re.compile(r"^etcd_server_is_leader (\S+)$", re.M),
    "keepalive_msgs": re.compile(
        r'^grpc_server_msg_received_total\{grpc_method="LeaseKeepAlive",[^}]*\} (\S+)$', re.M),
    "lease_grants": re.compile(
        r'^grpc_server_handled_total\{grpc_code="OK",grpc_method="LeaseGrant",[^}]*\} (\S+)$', re.M),
    "txn_rpcs": re.compile(r'^grpc_server_handled_total\{grpc_code="OK",grpc_method="Txn",[^}]*\} (\S+)$', re.M),
    "range_rpcs": re.compile(r'^grpc_server_handled_total\{grpc_code="OK",grpc_method="Range",[^}]*\} (\S+)$', re.M),
    "put_rpcs": re.compile(r'^grpc_server_handled_total\{grpc_code="OK",grpc_method="Put",[^}]*\} (\S+)$', re.M),
}


def stats(bases):
    revision = int(post(bases[0], "/v3/kv/range", {"key": b64("\0"), "limit": 1})["header"]["revision"])
    members = []
    for base in bases:
        status, text = get(base, "/metrics")
        text = text.decode()
        members.append({name: float(m.group(1)) if (m := pattern.search(text)) else None
                        for name, pattern in METRICS.items()})
    return {"time": time.time(), "revision": revision, "members": members}


# MARK: history

def history(base, first, last, prefix):
    """Revisions first+1..last, each described by the kinds of key it wrote."""
    if last <= first:
        return {"from": first, "to": last, "revisions_seen": 0, "shapes": []}
    host, port = host_port(base)
    conn = http.client.HTTPConnection(host, port, timeout=15)
    body = {"create_request": {"key": b64("\0"), "range_end": b64("\0"), "start_revision": str(first + 1)}}
    conn.request("POST", "/v3/watch", body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    revisions = {}
    while True:
        line = response.readline()
        if not line:
            break
        result = json.loads(line).get("result", {})
        done = False
        for event in result.get("events", []):
            kv = event["kv"]
            revision = int(kv.get("mod_revision", 0))
            if revision > last:
                done = True
                continue
            key = base64.b64decode(kv["key"]).decode(errors="replace")
            revisions.setdefault(revision, []).append((event.get("type", "PUT"), key))
        if done or max(revisions, default=first) >= last:
            break
    conn.close()

    def kind(key):
        if key.startswith(prefix):
            parts = key[len(prefix):].split("/")
            # catalog/instances/<service>/<id> -> catalog/instances; members/<id> -> members; catalog/log/<x> -> ...
            return prefix + "/".join(parts[:2] if parts[0] in ("catalog", "catalog-meta") else parts[:1])
        return key.split("/")[1] if key.startswith("/") and "/" in key[1:] else key

    # A shape is the set of kinds of key a revision wrote; for each kind, how many keys of it per revision.
    shapes = {}
    for revision, events in sorted(revisions.items()):
        counts = {}
        for kind_of, key in events:
            label = f"{kind_of} {kind(key)}"
            counts[label] = counts.get(label, 0) + 1
        entry = shapes.setdefault(tuple(sorted(counts)), {"revisions": 0, "events": 0, "per_revision": {}})
        entry["revisions"] += 1
        entry["events"] += len(events)
        for label, n in counts.items():
            entry["per_revision"].setdefault(label, []).append(n)
    described = []
    for labels, entry in shapes.items():
        parts = []
        for label in labels:
            ns = entry["per_revision"][label]
            if max(ns) == 1:
                parts.append(label)
            elif min(ns) == max(ns):
                parts.append(f"{label} x{ns[0]}")
            else:
                parts.append(f"{label} x{min(ns)}-{max(ns)} (mean {sum(ns) / len(ns):.1f})")
        described.append({"shape": ", ".join(parts), "revisions": entry["revisions"], "events": entry["events"]})
    return {"from": first, "to": last, "revisions_seen": len(revisions),
            "shapes": sorted(described, key=lambda x: -x["revisions"])}


# MARK: failover

def agent_info(base):
    status, data = get(base, "/v1/agent", timeout=2)
    if status != 200:
        raise RuntimeError(f"GET {base}/v1/agent: {status}")
    return json.loads(data)


def failover(base, victim, ttl_total, http_total, timeout):
    before = agent_info(base)
    killed = time.perf_counter()
    os.kill(victim, signal.SIGKILL)
    member_gone = checks_moved = None
    samples, last, errors = 0, before, 0
    while time.perf_counter() - killed < timeout:
        try:
            info = agent_info(base)
        except Exception:  # noqa: BLE001 - a slow answer is retried; counted below
            errors += 1
            time.sleep(0.02)
            continue
        now = time.perf_counter()
        samples += 1
        last = info
        members = len(info.get("cluster", {}).get("members", []))
        checks = info["health"]["checks"]
        if member_gone is None and members == 1:
            member_gone = now - killed
        if checks_moved is None and checks["ttl"] >= ttl_total and checks["http"] >= http_total:
            checks_moved = now - killed
        if member_gone is not None and checks_moved is not None:
            break
        time.sleep(0.02)
    return {
        "before": before["health"]["checks"], "after": last["health"]["checks"],
        "members_before": [m["id"] for m in before.get("cluster", {}).get("members", [])],
        "members_after": [m["id"] for m in last.get("cluster", {}).get("members", [])],
        "member_gone_s": None if member_gone is None else round(member_gone, 3),
        "checks_moved_s": None if checks_moved is None else round(checks_moved, 3),
        "counts_after": last.get("counts"), "samples": samples, "poll_errors": errors,
    }


def main():
    command = sys.argv[1]
    if command == "propagate":
        mode, write_base, watch_base = sys.argv[2], sys.argv[3], sys.argv[4]
        watchers, changes = int(sys.argv[5]), int(sys.argv[6])
        try:
            import uvloop  # optional: a faster event loop makes the driver's own share smaller
            uvloop.install()
        except ImportError:
            pass
        result = asyncio.run(propagate(mode, write_base, watch_base, watchers, changes))
    elif command == "stats":
        result = stats(sys.argv[2:])
    elif command == "history":
        result = history(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif command == "failover":
        result = failover(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
