-- wrk script for scripts/bench-freshness: every request asks for a URL never asked before
-- (the path plus ?u=<run tag>-<thread>-<counter>), so each one is a full miss of the cache.
-- The run tag is the script's first argument: wrk ... -s unique.lua URL -- TAG
local threads = 0
function setup(thread)
    threads = threads + 1
    thread:set("tid", threads) -- a global of that thread's Lua state
end
local counter = 0
function init(args)
    tag = args[1] or tostring(os.time())
end
function request()
    counter = counter + 1
    return wrk.format(nil, wrk.path .. "?u=" .. tag .. "-" .. tostring(tid or 0) .. "-" .. counter)
end
