"""Drives a Switchboard agent with py-consul, as a Consul user's program would; exits non-zero on the first surprise.

Usage: consul_client.py AGENT_PORT. Prints one line per step and "ok" at the end.
"""
import http.server
import sys
import threading
import time

import consul

agent = consul.Consul(host="127.0.0.1", port=int(sys.argv[1]))


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
threading.Thread(target=backend.serve_forever, daemon=True).start()
health_url = f"http://127.0.0.1:{backend.server_address[1]}/health"


def step(name):
    print("step:", name, flush=True)


def ids(nodes):
    return sorted(node["Service"]["ID"] for node in nodes)


def wait_for(what, probe, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


step("register with an HTTP check and with a TTL check")
assert agent.agent.service.register(
    "web", service_id="web-1", address="127.0.0.1", port=8081, tags=["v1", "blue"], meta={"zone": "a"},
    check=consul.Check.http(health_url, interval="1s", timeout="1s"))
assert agent.agent.service.register(
    "web", service_id="web-2", address="127.0.0.1", port=8082, tags=["v1"], check=consul.Check.ttl("30s"))

step("pass the TTL check")
assert agent.agent.check.ttl_pass("service:web-2", notes="warmed up")

step("find both passing once the HTTP check has run")
wait_for("both instances passing", lambda: ids(agent.health.service("web", passing=True)[1]) == ["web-1", "web-2"])
index, nodes = agent.health.service("web", passing=True, tag="blue")
assert ids(nodes) == ["web-1"], nodes
entry = nodes[0]
assert entry["Service"]["Port"] == 8081 and entry["Service"]["Meta"] == {"zone": "a"}, entry
assert any(check["CheckID"] == "service:web-1" and check["Status"] == "passing" for check in entry["Checks"]), entry
assert int(index) > 0, index

step("block on the index until a change")
index, nodes = agent.health.service("web", passing=True)
threading.Timer(0.5, lambda: agent.agent.check.ttl_fail("service:web-2", notes="lost the database")).start()
started = time.time()
changed_index, nodes = agent.health.service("web", passing=True, index=index, wait="20s")
waited = time.time() - started
assert 0.3 < waited < 15, waited
assert int(changed_index) > int(index), (index, changed_index)
assert ids(nodes) == ["web-1"], nodes

step("list the catalog, the agent's services and checks")
_, services = agent.catalog.services()
assert sorted(services["web"]) == ["blue", "v1"], services
_, listed = agent.catalog.service("web")
assert sorted(entry["ServiceID"] for entry in listed) == ["web-1", "web-2"], listed
local = agent.agent.services()
assert local["web-2"]["Service"] == "web" and local["web-2"]["Port"] == 8082, local
checks = agent.agent.checks()
assert checks["service:web-2"]["Status"] == "critical", checks
assert checks["service:web-2"]["Output"] == "lost the database", checks

step("drain an instance, then bring it back")
assert agent.agent.service.maintenance("web-1", True, "deploying")
assert ids(agent.health.service("web", passing=True)[1]) == []
_, nodes = agent.health.service("web")
drained = [node for node in nodes if node["Service"]["ID"] == "web-1"][0]
maintenance = [check for check in drained["Checks"] if check["CheckID"] == "_service_maintenance:web-1"]
assert maintenance and maintenance[0]["Status"] == "critical" and maintenance[0]["Notes"] == "deploying", drained
assert agent.agent.service.maintenance("web-1", False)
assert ids(agent.health.service("web", passing=True)[1]) == ["web-1"]

step("deregister")
assert agent.agent.service.deregister("web-2")
assert ids(agent.health.service("web")[1]) == ["web-1"]
assert "web-2" not in agent.agent.services()

print("ok", flush=True)
