-- wrk script: the same registration as register.lua, stored the way a home-made registry on etcd would
-- (one key per instance, JSON value), through etcd's v3 JSON gateway. KEY_ROOT (env) goes before every key and
-- PREFIX (env) into it, so several wrk processes (one per member, bench/cluster.sh) never share a key.
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

local root = os.getenv("KEY_ROOT") or ""
local tag = os.getenv("PREFIX")
tag = tag and (tag .. "-") or ""
local counter = 0
local headers = { ["Content-Type"] = "application/json" }
local value = base64('{"address": "10.0.0.1", "port": 8080, "tags": ["bench", "v1"], "meta": {"zone": "a", "version": "1.0.0"}}')

function request()
  counter = counter + 1
  local key = base64(root .. "/services/svc-" .. (counter % 100) .. "/" .. tag .. "t" .. tid .. "-" .. counter)
  return wrk.format("POST", "/v3/kv/put", headers, '{"key": "' .. key .. '", "value": "' .. value .. '"}')
end
