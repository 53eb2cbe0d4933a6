-- wrk script for bench/cluster.sh, the peer of cluster-register.lua: the same JSON value put to a new key on every
-- request through etcd's v3 JSON gateway (POST /v3/kv/put), one key per instance the way a home-made registry on
-- etcd would store it. PREFIX (env) starts every key, so several wrk processes (one per member) never share a key.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function base64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return alphabet:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

local prefix = os.getenv("PREFIX") or "w"
local counter = 0
local headers = { ["Content-Type"] = "application/json" }
local value = base64('{"address": "10.0.0.1", "port": 8080, "tags": ["bench", "v1"], "meta": {"zone": "a", "version": "1.0.0"}}')

function request()
  counter = counter + 1
  local key = base64("/peer/services/svc-" .. (counter % 100) .. "/" .. prefix .. "-t" .. tid .. "-" .. counter)
  return wrk.format("POST", "/v3/kv/put", headers, '{"key": "' .. key .. '", "value": "' .. value .. '"}')
end
