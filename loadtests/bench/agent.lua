-- The reference app's task path: POST /agent, then GET /result/{task_id} for the id it returned.
-- wrk runs one Lua state per thread; done() sums every thread's counters.

local ids = {}
accepted = 0
results = 0
local threads = {}
local post

function setup(thread)
   table.insert(threads, thread)
end

-- Formatted here, not at load time: wrk knows the Host header only once the thread starts,
-- and a strict HTTP/1.1 parser (h11: hypercorn) answers 400 to a request without it.
function init(args)
   post = wrk.format("POST", "/agent", {
      ["Content-Type"] = "application/json",
      ["X-User-Id"] = "loadtest",
   }, '{"prompt": "hello"}')
end

function request()
   local id = table.remove(ids)
   if id then
      return wrk.format("GET", "/result/" .. id)
   end
   return post
end

function response(status, headers, body)
   if status == 202 then
      local id = body:match('"task_id"%s*:%s*"([^"]+)"')
      if id then
         accepted = accepted + 1
         table.insert(ids, id)
      end
   elseif status == 200 then
      results = results + 1
   end
end

function done(summary, latency, requests)
   local total_accepted, total_results = 0, 0
   for _, thread in ipairs(threads) do
      total_accepted = total_accepted + thread:get("accepted")
      total_results = total_results + thread:get("results")
   end
   io.write(string.format("EXTRA accepted=%d\nEXTRA results=%d\n", total_accepted, total_results))
end
