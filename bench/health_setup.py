"""Set-up steps for bench/health.sh: many registrations, heartbeats or etcd leases, sent in parallel.

  health_setup.py ttl-instances BASE COUNT TTL        register COUNT instances with one TTL check each
  health_setup.py heartbeat-all BASE COUNT            one heartbeat for each (they start critical)
  health_setup.py http-instances BASE COUNT URL       register COUNT instances with an HTTP check (1s / 500ms)
  health_setup.py etcd-leases BASE COUNT TTL FILE     grant COUNT etcd leases, one ID per line in FILE
Exits non-zero if any request fails.
"""
import concurrent.futures
import http.client
import json
import sys
import threading
import urllib.parse

local = threading.local()


def connection(base):
    if getattr(local, "conn", None) is None:
        url = urllib.parse.urlparse(base)
        local.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    return local.conn


def send(base, method, path, body=None):
    conn = connection(base)
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {payload[:200]!r}")
    return payload


def run_all(count, job):
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(job, range(count)))
    return results


def main():
    command, base, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if command == "ttl-instances":
        ttl = sys.argv[4]
        run_all(count, lambda n: send(base, "PUT", f"/v1/services/bench/instances/hb-{n}", {
            "address": "127.0.0.1", "port": 9000, "checks": [{"type": "ttl", "ttl": ttl}]}))
    elif command == "heartbeat-all":
        run_all(count, lambda n: send(base, "PUT", f"/v1/services/bench/instances/hb-{n}/heartbeat"))
    elif command == "http-instances":
        url = sys.argv[4]
        run_all(count, lambda n: send(base, "PUT", f"/v1/services/probed/instances/h-{n}", {
            "address": "127.0.0.1", "port": 9000,
            "checks": [{"type": "http", "url": f"{url}?n={n}", "interval": "1s", "timeout": "500ms"}]}))
    elif command == "etcd-leases":
        ttl, path = int(sys.argv[4]), sys.argv[5]
        ids = run_all(count, lambda n: json.loads(send(base, "POST", "/v3/lease/grant", {"TTL": ttl}))["ID"])
        with open(path, "w") as out:
            out.write("\n".join(ids) + "\n")
    else:
        sys.exit(f"unknown command {command}")


main()
