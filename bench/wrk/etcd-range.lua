-- wrk script: reads every instance of one service from etcd (a prefix range), as a lookup would.
-- RANGE_KEY and RANGE_END are the base64 key and range end of the service's prefix.
local headers = { ["Content-Type"] = "application/json" }
local body = '{"key": "' .. os.getenv("RANGE_KEY") .. '", "range_end": "' .. os.getenv("RANGE_END") .. '"}'
function request()
  return wrk.format("POST", "/v3/kv/range", headers, body)
end
