-- wrk script for bench/cluster.sh: heartbeats (PUT .../heartbeat, no body) for INSTANCES registered TTL instances
-- hb-0..hb-(N-1), walked in order from OFFSET (env), so one wrk process per agent, each with its own OFFSET, gives
-- every instance a heartbeat at the same pace (bench/wrk/heartbeat.lua's walk depends on wrk's thread number, the
-- same in every one-thread process, so two processes would cover the same instances).
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
  local n = (offset + (tid - 1) * 7919 + counter) % instances
  return wrk.format("PUT", "/v1/services/bench/instances/hb-" .. n .. "/heartbeat")
end
