-- wrk script: registers a new instance on every request (PUT), spread over 100 services.
-- Each thread gets its own id prefix in setup(), so ids never collide across threads.
-- With QUOTA set, each thread registers that many distinct instances and then repeats its last one
-- (an idempotent no-op), and stops once QUOTA answers have arrived.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local counter = 0
local answered = 0
local quota = tonumber(os.getenv("QUOTA") or "0")
local services = tonumber(os.getenv("SERVICES") or "100")
local headers = { ["Content-Type"] = "application/json" }
local body = '{"address": "10.0.0.1", "port": 8080, "tags": ["bench", "v1"], "meta": {"zone": "a", "version": "1.0.0"}}'

function request()
  counter = counter + 1
  local n = counter
  if quota > 0 and n > quota then n = quota end
  local service = "svc-" .. (n % services)
  return wrk.format("PUT", "/v1/services/" .. service .. "/instances/t" .. tid .. "-" .. n, headers, body)
end

function response(status, headers, body)
  answered = answered + 1
  if quota > 0 and answered >= quota then wrk.thread:stop() end
end
