"""Drives a Switchboard agent with py-eureka-client, as a Eureka user's program would; exits non-zero on the first
surprise.

Usage: eureka_client.py AGENT_URL SIGNAL_FILE. Registers ORDER and PAYMENT (PAYMENT served by this script), lets
ORDER renew, fetch the registry and its deltas and call PAYMENT through its own balancer, then prints "restart me"
and waits for SIGNAL_FILE: the test restarts the agent (empty) meanwhile, and ORDER must register again by itself.
Then ORDER cancels. Prints "ok" at the end.
"""
import asyncio
import http.server
import json
import os
import sys
import threading
import time
import urllib.request

import py_eureka_client.eureka_client as eureka_client

agent, signal_file = sys.argv[1], sys.argv[2]


def step(name):
    print("step:", name, flush=True)


class Payment(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"charged")

    def log_message(self, *args):
        pass


backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Payment)
threading.Thread(target=backend.serve_forever, daemon=True).start()

# Count full fetches of the registry: after the first, deltas must keep the client's copy right (its hash check).
full_fetches = []
original_get_applications = eureka_client.get_applications


async def counting_get_applications(*args, **kwargs):
    full_fetches.append(time.time())
    return await original_get_applications(*args, **kwargs)


eureka_client.get_applications = counting_get_applications


class CrossThreadLock:
    """Stands in for py-eureka-client 0.13's `__net_lock`, an asyncio.Lock that its heartbeat thread's event loop and
    the caller's loop share, and that it takes again inside itself when a delta makes it re-fetch the whole registry.
    After a server restart both happen, and the client hangs for good (seen in CI: `stop()` never returned). This one is
    a thread-level reentrant lock, polled without blocking the loop that waits for it."""

    def __init__(self):
        self._lock = threading.RLock()

    async def __aenter__(self):
        while not self._lock.acquire(blocking=False):
            await asyncio.sleep(0.005)

    async def __aexit__(self, *exc):
        self._lock.release()


def fixed(client):
    client._EurekaClient__net_lock = CrossThreadLock()
    return client


def native(service):
    """The instances of a service through the native API, any status."""
    try:
        with urllib.request.urlopen(f"{agent}/v1/services/{service}?status=any", timeout=5) as answer:
            return json.load(answer)["instances"]
    except Exception:
        return []


def put_native(service, instance_id, port):
    """Registers an instance through the native API (no checks: passing)."""
    request = urllib.request.Request(
        f"{agent}/v1/services/{service}/instances/{instance_id}", method="PUT",
        data=json.dumps({"address": "127.0.0.1", "port": port}).encode(), headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).close()


def wait_for(what, probe, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def main():
    step("register PAYMENT and ORDER")
    payment = fixed(eureka_client.EurekaClient(
        eureka_server=f"{agent}/eureka", app_name="PAYMENT", instance_ip="127.0.0.1", instance_host="127.0.0.1",
        instance_port=backend.server_address[1], renewal_interval_in_secs=1, duration_in_secs=30,
        should_discover=False))
    await payment.start()
    order = fixed(eureka_client.EurekaClient(
        eureka_server=f"{agent}/eureka", app_name="ORDER", instance_ip="127.0.0.1", instance_host="127.0.0.1",
        instance_port=18080, renewal_interval_in_secs=1, duration_in_secs=30, metadata={"zone": "a"}))
    await order.start()
    wait_for("ORDER in the catalog", lambda: native("order"))
    wait_for("PAYMENT in the catalog", lambda: native("payment"))

    step("renew: the lease check passes on renewals")
    wait_for("a renewal", lambda: any(
        check.get("output") == "renewed" for check in (native("order") or [{}])[0].get("checks", [])))
    assert native("order")[0]["status"] == "passing", native("order")

    step("call PAYMENT through the client's own balancer")
    answer = await order.do_service("PAYMENT", "/charge", return_type="string")
    assert answer == "charged", answer

    step("deltas keep the registry right, with no full re-fetch")
    fetches_before = len(full_fetches)
    put_native("payment", "p2", 7001)
    wait_for("a second PAYMENT through a delta", lambda: len(order.applications.get_application("PAYMENT").instances) == 2)
    time.sleep(2.5)
    assert len(full_fetches) == fetches_before, f"full fetches after the change: {len(full_fetches) - fetches_before}"

    step("a new app: the client fetches all once (its own rule for an app it has not seen), then deltas again")
    put_native("cart", "c1", 7000)
    wait_for("CART", lambda: order.applications.get_application("CART").instances)
    time.sleep(3)
    assert len(full_fetches) - fetches_before <= 1, f"full fetches: {len(full_fetches) - fetches_before}"

    print("restart me", flush=True)
    wait_for("the signal", lambda: os.path.exists(signal_file), seconds=60)

    step("register again on the restarted agent")
    wait_for("ORDER registered again", lambda: native("order"), seconds=30)

    step("cancel")
    await order.stop()
    wait_for("ORDER gone", lambda: not native("order"))
    # One write, so that PAYMENT's heartbeat thread, which may still log, cannot split the line.
    sys.stdout.write("ok\n")
    sys.stdout.flush()


asyncio.run(main())
# The clients' renewal threads never end by themselves.
os._exit(0)
