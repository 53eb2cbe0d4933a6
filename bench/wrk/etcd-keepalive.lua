-- wrk script: etcd lease keep-alives (POST /v3/lease/keepalive through etcd's JSON gateway) for the lease IDs
-- listed one per line in the file LEASES: etcd's equivalent of a TTL heartbeat.
local ids = {}
for line in io.lines(os.getenv("LEASES")) do
  if line ~= "" then ids[#ids + 1] = line end
end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local counter = 0
local headers = { ["Content-Type"] = "application/json" }

function request()
  counter = counter + 1
  local id = ids[((counter * 7919 + tid * 104729) % #ids) + 1]
  return wrk.format("POST", "/v3/lease/keepalive", headers, '{"ID": "' .. id .. '"}')
end
