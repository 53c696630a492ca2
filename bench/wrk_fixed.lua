-- wrk script for a fixed number of SMS submissions instead of a fixed duration.
--
-- Each wrk thread sends its share of BENCH_COUNT requests and stops once that
-- many answers came back; every request carries a different destination and
-- text, so nothing on either side can collapse repeats. BENCH_TARGET picks the
-- request form:
--   kannel: GET /cgi-bin/sendsms?username=..&password=..&from=..&to=..&text=..
--   hub:    POST /api/v1/message/send with the JSON body of the public API
-- done() prints one JSON line the bench reads: requests, 2xx answers, errors
-- and latency percentiles in microseconds; the bench times the run itself.

local threads = {}

function setup(thread)
  thread:set("index", #threads)
  table.insert(threads, thread)
end

function init(args)
  local total = tonumber(os.getenv("BENCH_COUNT"))
  local nthreads = tonumber(os.getenv("BENCH_THREADS"))
  target = os.getenv("BENCH_TARGET")
  quota = math.floor(total / nthreads)
  if index == 0 then
    quota = quota + (total - quota * nthreads)
  end
  issued = 0
  answered = 0
  ok = 0
  user = os.getenv("BENCH_USER") or ""
  secret = os.getenv("BENCH_SECRET") or ""
  channel = os.getenv("BENCH_CHANNEL") or ""
end

local function destination(n)
  -- +44791, the thread, then a running number: distinct, valid UK mobiles.
  return string.format("+44791%d%06d", index, n % 1000000)
end

function request()
  issued = issued + 1
  local to = destination(issued)
  local text = string.format("bench %d %d", index, issued)
  if target == "kannel" then
    local path = string.format(
      "/cgi-bin/sendsms?username=%s&password=%s&from=12345&to=%s&text=%s",
      user, secret, (to:gsub("%+", "%%2B")), (text:gsub(" ", "+")))
    return wrk.format("GET", path)
  end
  local body = string.format(
    '{"channelId":"%s","type":"text","to":{"phone":"%s"},"text":{"body":"%s"}}',
    channel, to, text)
  return wrk.format("POST", "/api/v1/message/send", {
    ["content-type"] = "application/json",
    ["x-api-id"] = user,
    ["x-api-key"] = secret,
  }, body)
end

function response(status, headers, body)
  answered = answered + 1
  if status >= 200 and status < 300 then
    ok = ok + 1
  elseif not told then
    -- The first refusal of each thread, for the bench's notes.
    told = true
    io.write(string.format("refused: %d %s\n", status, (body or ""):sub(1, 200):gsub("\n", " ")))
    io.flush()
  end
  if answered == quota then
    -- wrk's main thread sleeps for the whole -d regardless: this line tells the
    -- bench that this thread is through, and the bench ends the wait with SIGINT.
    io.write("thread-done\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local accepted = 0
  for _, thread in ipairs(threads) do
    accepted = accepted + thread:get("ok")
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"ok":%d,"errors":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, accepted, e.connect + e.read + e.write + e.status + e.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99)))
end
