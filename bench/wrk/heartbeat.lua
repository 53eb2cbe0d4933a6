-- wrk script: heartbeats (PUT .../heartbeat, no body) for INSTANCES registered TTL instances hb-0..hb-(N-1),
-- each thread walking the ids from its own offset, so every instance is kept alive. OFFSET (env) shifts the walk, so
-- one-thread wrk processes started with different offsets (bench/cluster.sh) do not walk the same ids in step.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local instances = tonumber(os.getenv("INSTANCES") or "10000")
local offset = tonumber(os.getenv("OFFSET") or "0")
local counter = 0

function request()
  counter = counter + 1
  local n = (offset + counter * 7919 + tid * 104729) % instances
  return wrk.format("PUT", "/v1/services/bench/instances/hb-" .. n .. "/heartbeat")
end
