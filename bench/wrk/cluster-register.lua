-- wrk script for bench/cluster.sh: registers a new instance on every request (PUT), spread over 100 services, the
-- same body as register.lua. PREFIX (env) starts every id, so several wrk processes (one per agent) never register
-- the same instance: every answer is a new instance written to etcd, none an idempotent no-op.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local prefix = os.getenv("PREFIX") or "w"
local counter = 0
local headers = { ["Content-Type"] = "application/json" }
local body = '{"address": "10.0.0.1", "port": 8080, "tags": ["bench", "v1"], "meta": {"zone": "a", "version": "1.0.0"}}'

function request()
  counter = counter + 1
  local service = "svc-" .. (counter % 100)
  return wrk.format("PUT", "/v1/services/" .. service .. "/instances/" .. prefix .. "-t" .. tid .. "-" .. counter,
    headers, body)
end
