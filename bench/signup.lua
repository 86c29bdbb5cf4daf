-- wrk script: POST /subscribe (JSON API) with a unique address per request.
-- Uniqueness: a per-run prefix (env BENCH_RUN), the wrk thread number and a counter.
local run = os.getenv("BENCH_RUN") or tostring(os.time())
local threads = 0
local counter = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  counter = 0
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"email":"s%s-%d-%d@signup.bench.example","name":"Bench %d","offerings":["morning-meditation"]}',
    run, tid, counter, counter)
  return wrk.format("POST", "/subscribe", { ["Content-Type"] = "application/json" }, body)
end

local bad = 0
function response(status, headers, body)
  if status >= 300 then
    bad = bad + 1
    if bad <= 3 then io.stderr:write("signup answered " .. status .. ": " .. body .. "\n") end
  end
end
