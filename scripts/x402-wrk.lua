-- wrk script for x402-paid calls (scripts/bench-x402.sh with GEN=wrk): every request carries a
-- payment signed in advance by cmd/x402load -out, none of them twice. Each wrk thread takes
-- every k-th line of the file (k = the number of threads) and builds its requests once, in
-- init, so that request() is a table lookup. A thread that runs out of payments stops, and
-- done() says so: the run was too long for the payments signed, and its numbers are void.
local threads, counter = {}, 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

local body = '{"agentId":"bench","tool":{"name":"json_parse","args":{"data":{"key":"value","n":[1,2,3]}}}}'
local reqs, nreq, next = {}, 0, 1
exhausted = false

function init(args)
  local path, k = args[1], tonumber(args[2])
  local i = 0
  for line in io.lines(path) do
    if line ~= "" then
      if i % k == id - 1 then
        nreq = nreq + 1
        reqs[nreq] = wrk.format("POST", nil, {["Content-Type"] = "application/json", ["PAYMENT-SIGNATURE"] = line}, body)
      end
      i = i + 1
    end
  end
end

function request()
  if next > nreq then
    exhausted = true
    wrk.thread:stop()
    return wrk.format("GET", "/health")
  end
  next = next + 1
  return reqs[next - 1]
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    if t:get("exhausted") then
      io.write("EXHAUSTED: a thread ran out of signed payments; sign more (N) or run shorter\n")
    end
  end
  io.write(string.format("paid requests: %d, non-2xx: %d\n", summary.requests, summary.errors.status))
end
