-- wrk script: POST /webhooks/postmark, a flood of authenticated hard-bounce events, each with
-- its own event and message id (so each is a new report: recorded, matched to no delivery, kept
-- for review). Credentials: env BENCH_WEBHOOK_AUTH, the base64 of "user:password".
local run = os.getenv("BENCH_RUN") or tostring(os.time())
local auth = "Basic " .. (os.getenv("BENCH_WEBHOOK_AUTH") or "")
-- Another path (BENCH_FLOOD_PATH) measures what the flood costs the signups as mere load.
local path = os.getenv("BENCH_FLOOD_PATH") or "/webhooks/postmark"
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
    '{"RecordType":"Bounce","ID":%d%d%d,"Type":"HardBounce","TypeCode":1,'
    .. '"MessageID":"bench-%s-%d-%d","Email":"gone%d@flood.bench.example",'
    .. '"Description":"The server was unable to deliver your message","Details":"550 5.1.1 no such user",'
    .. '"BouncedAt":"2026-12-07T16:33:54Z"}',
    tid, counter, math.random(1000000), run, tid, counter, counter)
  return wrk.format("POST", path,
    { ["Content-Type"] = "application/json", ["Authorization"] = auth }, body)
end

local bad = 0
function response(status, headers, body)
  if status >= 300 then
    bad = bad + 1
    if bad <= 3 then io.stderr:write("webhook answered " .. status .. ": " .. body .. "\n") end
  end
end
