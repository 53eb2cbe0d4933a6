"""Driver for bench/etcd-transport.sh: etcd's v3 JSON gateway (HTTP/1.1) against its native gRPC API, measured by
etcd's own CPU time per operation.

Subcommands (the shell script runs them; see its header):
  probe  ENDPOINT                    checks, live, how the JSON gateway encodes things (prints markdown bullets)
  bench  --label L --endpoints ...   runs the cells of one etcd setup and appends one JSON line per cell to --out
  report FILE.jsonl                  prints the markdown tables

Clients:
  json  http.client, one keep-alive HTTP/1.1 connection per thread (TCP_NODELAY), bodies built with json + base64.
  grpc  grpcio with one channel (one HTTP/2 connection) shared by all threads, messages from etcd's own descriptors.
  grpc-conn  the same with one channel, and so one HTTP/2 connection, per thread (local subchannel pools).

The gRPC messages: python-etcd3 (the PyPI package `etcd3`, 0.12.0) ships etcd's rpc.proto/kv.proto/auth.proto
compiled for protobuf 3, and its generated modules refuse to load on protobuf >= 4, while protobuf < 4 has no
binary wheel for CPython 3.11 (pure Python only, far slower). So the serialized FileDescriptorProtos are read
out of those modules' source (without importing them) into a descriptor pool of the current protobuf (upb),
and grpcio's generic unary_unary calls use the classes made from it. The wire format is etcd's own.

Server CPU: utime + stime of every etcd process from /proc/PID/stat (all threads), read right before the
measured window and right after every thread has finished its last request, in clock ticks (os.sysconf
SC_CLK_TCK). Each cell has an unmeasured warm-up second on the same connections first.
"""

import argparse
import ast
import base64
import http.client
import importlib.util
import json
import os
import pathlib
import socket
import sys
import threading
import time

VALUE = (b"switchboard-instance:" + bytes(range(32, 127)) * 5)[:400]  # a ~400-byte value, as a registration
BATCH = 50
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------------------------- measurements

def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15; fields[0] is field 3, state)


def b64(data):
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix):
    return prefix[:-1] + bytes([prefix[-1] + 1])


# ----------------------------------------------------------------------------------------------- JSON gateway

class JsonClient:
    def __init__(self, endpoint):
        host, port = endpoint.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self, path, body):
        self.conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}: {data[:200]!r}")
        return json.loads(data)

    def put(self, key):
        reply = self.call("/v3/kv/put", {"key": b64(key), "value": VALUE64})
        return "revision" in reply["header"]

    def txn_create(self, key):
        reply = self.call("/v3/kv/txn", {
            "compare": [{"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": "0"}],
            "success": [{"request_put": {"key": b64(key), "value": VALUE64}}],
        })
        return reply.get("succeeded", False) is True  # false is omitted from the JSON

    def txn_batch(self, keys):
        reply = self.call("/v3/kv/txn", {"success": [{"request_put": {"key": b64(k), "value": VALUE64}} for k in keys]})
        return reply.get("succeeded", False) is True and len(reply.get("responses", [])) == len(keys)

    def count(self, prefix):
        reply = self.call("/v3/kv/range", {"key": b64(prefix), "range_end": b64(prefix_end(prefix)), "count_only": True})
        return int(reply.get("count", "0"))

    def close(self):
        self.conn.close()


VALUE64 = b64(VALUE)


# ----------------------------------------------------------------------------------------------- gRPC

class Proto:
    """etcd's messages, from the descriptors that python-etcd3 ships (see the module doc)."""

    def __init__(self):
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        spec = importlib.util.find_spec("etcd3")  # finds the package without running its __init__
        base = pathlib.Path(list(spec.submodule_search_locations)[0]) / "etcdrpc"
        pool = descriptor_pool.DescriptorPool()
        for name in ("kv_pb2.py", "auth_pb2.py", "rpc_pb2.py"):
            serialized = None
            for node in ast.walk(ast.parse((base / name).read_text())):
                if isinstance(node, ast.keyword) and node.arg == "serialized_pb":
                    literal = node.value.args[0] if isinstance(node.value, ast.Call) else node.value
                    serialized = literal.value.encode("latin1") if isinstance(literal.value, str) else literal.value
            pool.Add(descriptor_pb2.FileDescriptorProto.FromString(serialized))
        for message in ("PutRequest", "PutResponse", "TxnRequest", "TxnResponse", "RangeRequest", "RangeResponse",
                        "Compare", "RequestOp"):
            setattr(self, message, message_factory.GetMessageClass(pool.FindMessageTypeByName("etcdserverpb." + message)))
        compare = pool.FindMessageTypeByName("etcdserverpb.Compare")
        self.MOD = compare.enum_types_by_name["CompareTarget"].values_by_name["MOD"].number
        self.EQUAL = compare.enum_types_by_name["CompareResult"].values_by_name["EQUAL"].number


class GrpcClient:
    def __init__(self, channel, proto):
        self.p = p = proto
        self.channel = channel
        self._put = channel.unary_unary("/etcdserverpb.KV/Put", request_serializer=p.PutRequest.SerializeToString,
                                        response_deserializer=p.PutResponse.FromString)
        self._txn = channel.unary_unary("/etcdserverpb.KV/Txn", request_serializer=p.TxnRequest.SerializeToString,
                                        response_deserializer=p.TxnResponse.FromString)
        self._range = channel.unary_unary("/etcdserverpb.KV/Range",
                                          request_serializer=p.RangeRequest.SerializeToString,
                                          response_deserializer=p.RangeResponse.FromString)

    def put(self, key):
        return self._put(self.p.PutRequest(key=key, value=VALUE), timeout=30).header.revision > 0

    def txn_create(self, key):
        p = self.p
        reply = self._txn(p.TxnRequest(
            compare=[p.Compare(key=key, target=p.MOD, result=p.EQUAL, mod_revision=0)],
            success=[p.RequestOp(request_put=p.PutRequest(key=key, value=VALUE))]), timeout=30)
        return reply.succeeded

    def txn_batch(self, keys):
        p = self.p
        reply = self._txn(p.TxnRequest(success=[p.RequestOp(request_put=p.PutRequest(key=k, value=VALUE)) for k in keys]),
                          timeout=30)
        return reply.succeeded and len(reply.responses) == len(keys)

    def count(self, prefix):
        return self._range(self.p.RangeRequest(key=prefix, range_end=prefix_end(prefix), count_only=True),
                           timeout=60).count


def grpc_channel(endpoint, own_connection):
    import grpc

    options = [("grpc.max_receive_message_length", 16 << 20)]
    if own_connection:
        options.append(("grpc.use_local_subchannel_pool", 1))
    channel = grpc.insecure_channel(endpoint, options=options)
    grpc.channel_ready_future(channel).result(timeout=10)
    return channel


# ----------------------------------------------------------------------------------------------- one cell

def run_cell(transport, test, threads, endpoints, pids, duration, warmup, prefix, proto):
    clients = []
    shared = {}
    for t in range(threads):
        endpoint = endpoints[t % len(endpoints)]  # thread t talks to member t mod n, as one agent per member would
        if transport == "json":
            clients.append(JsonClient(endpoint))
        else:
            if transport == "grpc-conn":
                channel = grpc_channel(endpoint, True)
            else:
                if endpoint not in shared:
                    shared[endpoint] = grpc_channel(endpoint, False)
                channel = shared[endpoint]
            clients.append(GrpcClient(channel, proto))

    counts = [0] * threads  # requests that succeeded
    failures = [0] * threads
    errors = []
    stop = threading.Event()
    start = threading.Barrier(threads + 1)

    def worker(t):
        client = clients[t]
        base = prefix + b"%02d/" % t
        i = 0
        start.wait()
        try:
            while not stop.is_set():
                if test == "put":
                    ok = client.put(base + b"%09d" % i)
                    i += 1
                elif test == "txn":
                    ok = client.txn_create(base + b"%09d" % i)
                    i += 1
                else:
                    ok = client.txn_batch([base + b"%09d" % (i + j) for j in range(BATCH)])
                    i += BATCH
                if ok:
                    counts[t] += 1
                else:
                    failures[t] += 1
        except Exception as error:  # noqa: BLE001 - reported in the results
            errors.append(repr(error)[:300])

    workers = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    time.sleep(warmup)
    before_counts = sum(counts)
    before_ticks = {pid: cpu_ticks(pid) for pid in pids}
    before_client = os.times()
    began = time.monotonic()
    time.sleep(duration)
    stop.set()
    for w in workers:
        w.join(timeout=60)
    elapsed = time.monotonic() - began
    after_ticks = {pid: cpu_ticks(pid) for pid in pids}
    after_client = os.times()
    requests = sum(counts) - before_counts
    keys_per_request = BATCH if test == "batch" else 1

    total_written = sum(counts) * keys_per_request
    stored = clients[0].count(prefix)
    for c in clients:
        if transport == "json":
            c.close()
    for channel in {id(c.channel): c.channel for c in clients if transport != "json"}.values():
        channel.close()
    return {
        "transport": transport, "test": test, "threads": threads, "seconds": round(elapsed, 3),
        "requests": requests, "keys": requests * keys_per_request, "failed": sum(failures), "errors": errors[:3],
        "etcd_ticks": {str(pid): after_ticks[pid] - before_ticks[pid] for pid in pids}, "clk_tck": CLK_TCK,
        "client_cpu_s": round((after_client.user - before_client.user) + (after_client.system - before_client.system), 3),
        "stored_keys": stored, "written_keys": total_written, "loadavg": os.getloadavg()[0],
    }


def bench(args):
    endpoints = args.endpoints.split(",")
    pids = [int(p) for p in args.pids.split(",")]
    proto = Proto() if any(t.startswith("grpc") for t in args.transports.split(",")) else None

    # etcd's idle CPU over a few seconds, to show what the background costs in a window
    idle_before = {pid: cpu_ticks(pid) for pid in pids}
    time.sleep(args.idle)
    idle_ticks = sum(cpu_ticks(pid) - idle_before[pid] for pid in pids)
    base = {"label": args.label, "members": len(pids), "idle_ticks_per_s": round(idle_ticks / args.idle, 2)}

    cells = []
    for test in args.tests.split(","):
        for threads in [int(n) for n in args.threads.split(",")]:
            cells.append((test, threads))
    transports = args.transports.split(",")
    extra = [t for t in args.extra.split(",") if t]
    with open(args.out, "a") as out:
        for index, (test, threads) in enumerate(cells):
            order = transports if index % 2 == 0 else list(reversed(transports))  # ABBA across cells
            if (test, threads) == (args.extra_test, args.extra_threads):
                order = order + extra
            for transport in order:
                run = "%s/%s/%s/%s/%d/" % (args.run_id, args.label, test, transport, threads)
                result = run_cell(transport, test, threads, endpoints, pids, args.duration, args.warmup,
                                  b"/bench/" + run.encode(), proto)
                result.update(base)
                out.write(json.dumps(result) + "\n")
                out.flush()
                ticks = sum(result["etcd_ticks"].values())
                print(f"  {args.label:7} {test:5} {transport:9} x{threads:<2} {result['requests'] / result['seconds']:8.0f} req/s"
                      f"  etcd {ticks / CLK_TCK:6.2f} CPU-s  failed {result['failed']}  errors {len(result['errors'])}"
                      f"  stored {result['stored_keys']}/{result['written_keys']}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- report

def report(args):
    rows = [json.loads(line) for line in open(args.file) if line.strip()]
    print("| etcd | test | transport | threads | req/s | keys/s | etcd CPU-s per 1k req | etcd CPU-s per 1k keys "
          "| etcd cores busy | client CPU-s per 1k req | failed/errors | keys stored = written |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ticks = sum(r["etcd_ticks"].values())
        cpu = ticks / r["clk_tck"]
        req = max(r["requests"], 1)
        print(f"| {r['label']} ({r['members']}) | {r['test']} | {r['transport']} | {r['threads']} "
              f"| {r['requests'] / r['seconds']:.0f} | {r['keys'] / r['seconds']:.0f} "
              f"| {1000 * cpu / req:.3f} | {1000 * cpu / max(r['keys'], 1):.3f} | {cpu / r['seconds']:.2f} "
              f"| {1000 * r['client_cpu_s'] / req:.3f} | {r['failed']}/{len(r['errors'])} "
              f"| {'yes' if r['stored_keys'] == r['written_keys'] else 'NO %d/%d' % (r['stored_keys'], r['written_keys'])} |")
    print()
    print("JSON gateway against gRPC (one shared channel), etcd CPU per operation (ratio > 1: JSON costs more):")
    print()
    print("| etcd | test | threads | JSON CPU-ms/req | gRPC CPU-ms/req | JSON / gRPC |")
    print("|---|---|---|---|---|---|")
    by = {(r["label"], r["test"], r["threads"], r["transport"]): r for r in rows}
    seen = []
    for r in rows:
        key = (r["label"], r["test"], r["threads"])
        if key in seen or (key + ("json",)) not in by or (key + ("grpc",)) not in by:
            continue
        seen.append(key)
        per = {}
        for transport in ("json", "grpc"):
            x = by[key + (transport,)]
            per[transport] = 1000 * sum(x["etcd_ticks"].values()) / x["clk_tck"] / max(x["requests"], 1)
        print(f"| {key[0]} | {key[1]} | {key[2]} | {per['json']:.3f} | {per['grpc']:.3f} | {per['json'] / per['grpc']:.2f} |")
    print()
    loads = [r["loadavg"] for r in rows]
    print(f"1-minute load average at the end of each cell: {min(loads):.2f} to {max(loads):.2f}.")
    idle = {}
    for r in rows:
        idle[r["label"]] = r["idle_ticks_per_s"]
    print("etcd idle CPU (all members, before the cells): " + ", ".join(
        f"{label} {ticks / rows[0]['clk_tck']:.3f} CPU-s/s" for label, ticks in idle.items()))


# ----------------------------------------------------------------------------------------------- probe

def probe(args):
    """Checks, against the running etcd, the JSON gateway's encodings that a client has to get right."""
    host, port = args.endpoint.split(":")
    notes = []

    def call(path, body, raw=False):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", path, body if raw else json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, data

    key = b"/probe/a"
    status, data = call("/v3/kv/put", {"key": b64(key), "value": b64(b"v1")})
    header = json.loads(data)["header"]
    notes.append(f"put -> HTTP {status}, header {json.dumps(header)}: 64-bit integers come back as JSON strings "
                 f"(types: {sorted({type(v).__name__ for v in header.values()})})")
    revision = int(header["revision"])

    status, data = call("/v3/kv/range", {"key": b64(b"/probe/missing")})
    notes.append(f"range of a missing key -> {data.decode().strip()}: no `kvs`, no `count` (zero and empty are omitted)")

    status, data = call("/v3/kv/range", {"key": b64(key)})
    kv = json.loads(data)["kvs"][0]
    notes.append(f"range of a key -> kv {json.dumps(kv)}: key and value base64, revisions/version strings; "
                 f"a key's `lease` is omitted when 0")

    status, data = call("/v3/kv/txn", {"compare": [{"key": b64(key), "target": "MOD", "result": "EQUAL",
                                                    "mod_revision": "1"}],
                                       "success": [{"request_put": {"key": b64(key), "value": b64(b"v2")}}]})
    notes.append(f"txn whose compare fails -> HTTP {status} {data.decode().strip()}: `succeeded` is omitted, "
                 f"not false (read a missing field as false)")

    status, data = call("/v3/kv/txn", {"compare": [{"key": b64(key), "target": "MOD", "mod_revision": revision}],
                                       "success": [{"request_put": {"key": b64(key), "value": b64(b"v2")}}]})
    notes.append(f"txn with `mod_revision` as a JSON number and `result` left out (EQUAL is enum 0) -> HTTP {status}, "
                 f"succeeded={json.loads(data).get('succeeded')}: numbers are accepted for int64 on input")

    status, data = call("/v3/kv/txn", {"success": [{"request_put": {"key": b64(key), "value": b64(b"x")}},
                                                   {"request_put": {"key": b64(key), "value": b64(b"y")}}]})
    notes.append(f"txn putting one key twice -> HTTP {status} {data.decode().strip()[:200]}")

    status, data = call("/v3/kv/put", {"key": b64(key), "valu": b64(b"typo")})
    _, stored = call("/v3/kv/range", {"key": b64(key)})
    notes.append(f"put with a misspelt field (`valu`) -> HTTP {status}, and the key now holds "
                 f"{json.loads(stored)['kvs'][0].get('value', '(no value field: empty)')}: unknown fields are ignored, "
                 f"so a typo silently writes an empty value")

    status, data = call("/v3/kv/put", {"key": "not base64!", "value": b64(b"v")})
    notes.append(f"put with a key that is not base64 -> HTTP {status} {data.decode().strip()[:200]}")

    odd = b"\xfb\xff/probe?"
    status, data = call("/v3/kv/put", {"key": base64.urlsafe_b64encode(odd).decode(), "value": b64(b"v")})
    status2, data2 = call("/v3/kv/range", {"key": b64(odd)})
    notes.append(f"put with a URL-safe base64 key ({base64.urlsafe_b64encode(odd).decode()}) -> HTTP {status} "
                 f"{data.decode().strip()[:120]}; the standard-base64 range then finds "
                 f"{json.loads(data2).get('count', '0')} key(s)")

    # watch: one HTTP request = one watch; the response is a stream of JSON objects
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/v3/watch", json.dumps({"create_request": {"key": b64(b"/probe/w"),
                                                                     "range_end": b64(prefix_end(b"/probe/w"))}}),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    first = response.readline()
    notes.append(f"watch -> HTTP {response.status}, Transfer-Encoding {response.getheader('Transfer-Encoding')}, "
                 f"Content-Type {response.getheader('Content-Type')}; first line {first.decode().strip()}: each message "
                 f"is one JSON object wrapped in `result` and ended by a newline; the first watch's `watch_id` 0 is "
                 f"omitted")
    sent = time.monotonic()
    call("/v3/kv/put", {"key": b64(b"/probe/w/1"), "value": b64(b"v")})
    event_line = response.readline()
    delay = (time.monotonic() - sent) * 1000
    event = json.loads(event_line)["result"]["events"][0]
    notes.append(f"watch event after a put, {delay:.1f} ms after sending the put (delivered at once, not buffered): "
                 f"{event_line.decode().strip()}: the event `type` is missing for PUT (enum 0) and present only as "
                 f"\"DELETE\"" if "type" not in event else f"watch event: {event_line.decode().strip()}")
    status, data = call("/v3/kv/delete_range", {"key": b64(b"/probe/w/1")})
    notes.append(f"POST /v3/kv/delete_range -> HTTP {status} {data.decode().strip()[:80]}: the paths are the "
                 f"gateway's own (DeleteRange is /v3/kv/deleterange), not snake-cased proto names")
    status, data = call("/v3/kv/deleterange", {"key": b64(b"/probe/w/1")})
    notes.append(f"watch event after a delete (/v3/kv/deleterange -> HTTP {status}): "
                 f"{response.readline().decode().strip()}")
    conn.close()
    # several WatchRequests in one request body: the gateway decodes the body until its end
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    body = "".join(json.dumps({"create_request": {"key": b64(k)}}) for k in (b"/probe/x", b"/probe/y"))
    conn.request("POST", "/v3/watch", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    created = [json.loads(response.readline())["result"] for _ in range(2)]
    conn.close()
    notes.append(f"two create_requests concatenated in one /v3/watch body -> {len(created)} `created` messages, "
                 f"watch ids {[c.get('watch_id', '0 (omitted)') for c in created]}: the body is read as a stream of "
                 f"WatchRequests, but an HTTP/1.1 client sends its whole body before it reads the stream, so the set "
                 f"of watches (and any cancel) is fixed when the request is sent: add or cancel a watch = another "
                 f"connection, or close this one; no progress requests later either")
    status, data = call("/v3/lease/grant", {"TTL": 30})
    lease = json.loads(data)
    status2, data2 = call("/v3/lease/revoke", {"ID": lease.get("ID")})
    status3, data3 = call("/v3/lease/revoke", {"ID": lease.get("ID")})
    notes.append(f"lease: POST /v3/lease/grant {{\"TTL\": 30}} -> HTTP {status}, ID {json.dumps(lease.get('ID'))}, TTL {json.dumps(lease.get('TTL'))}: the "
                 f"lease ID is a JSON string and the fields are spelt `TTL`/`ID` as in the proto; /v3/lease/revoke -> "
                 f"HTTP {status2}; revoking it again -> HTTP {status3} {data3.decode().strip()[:120]}: gRPC codes become HTTP "
                 f"statuses, so a 404 is either a wrong path (plain text body) or NotFound from etcd (JSON body)")
    call("/v3/kv/deleterange", {"key": b64(b"/probe"), "range_end": b64(prefix_end(b"/probe"))})
    call("/v3/kv/deleterange", {"key": b64(odd)})
    for note in notes:
        print("- " + note)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe")
    p.add_argument("endpoint")
    b = sub.add_parser("bench")
    b.add_argument("--label", required=True)
    b.add_argument("--endpoints", required=True)
    b.add_argument("--pids", required=True)
    b.add_argument("--tests", default="put,txn,batch")
    b.add_argument("--threads", default="1,16")
    b.add_argument("--transports", default="json,grpc")
    b.add_argument("--extra", default="", help="more transports for the one cell --extra-test/--extra-threads")
    b.add_argument("--extra-test", default="put")
    b.add_argument("--extra-threads", type=int, default=16)
    b.add_argument("--duration", type=float, default=10)
    b.add_argument("--warmup", type=float, default=1)
    b.add_argument("--idle", type=float, default=3)
    b.add_argument("--run-id", default=str(int(time.time())))
    b.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("file")
    args = parser.parse_args()
    {"probe": probe, "bench": bench, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
