-- redis under loss and delay: redis-benchmark's throughput (SET and GET, requests per second)
-- against packet loss and delay on the server's link, 3 repetitions of each combination.
-- The link is shaped by the relay engine, which works on kernels without sch_netem too.
--
--   moonbox experiment scripts/experiments/redis_loss.lua [--jobs 2] [--param loss=0,0.05]
--
-- The first run builds the image (debootstrap, then apt: a few minutes); later runs reuse it.
-- Copy this file, change the grid, and the report is in results/redis-loss/report.html.
local experiment = require "moonbox.experiment"
local recipe = require "moonbox.recipe"

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "scripts/experiments"
recipe.build(recipe.load(here .. "/recipes/redis.lua"), { quiet = true })

local e = experiment.new{ name = "redis-loss", out = "results/redis-loss" }
e:param("loss", { 0, 0.01, 0.02, 0.05, 0.1 })
e:param("delay", { 0, 0.01, 0.05 })
e:param("rep", { 1, 2, 3 })

e:trial(function(t, p)
  local lab = t:network{ subnet = "10.90.0.0/24" }
  local srv = t:container{ image = "exp-redis:7", name = "srv", networks = { lab.name } }
  srv:wait_port(6379, { timeout = 20 })
  lab:shape("srv", { engine = "relay", loss = p.loss, delay = p.delay })
  t:sample(srv, { every = 0.25 })
  local r = t:run{ image = "exp-redis:7", name = "bench", networks = { lab.name }, stdout = "capture", stderr = "capture",
    command = { "redis-benchmark", "-h", "srv", "-q", "-n", "1000", "-c", "20", "-t", "set,get" } }
  if r.code ~= 0 then error("redis-benchmark failed: " .. r.stderr) end
  -- "SET: 12345.68 requests per second" (redis-benchmark rewrites its line with \r)
  local out = r.stdout:gsub("\r", "\n")
  local set = tonumber(out:match("SET: ([%d.]+) requests per second"))
  local get = tonumber(out:match("GET: ([%d.]+) requests per second"))
  if not set or not get then error("no throughput in redis-benchmark's output: " .. out:sub(1, 300)) end
  t:record{ set_rps = set, get_rps = get }
end)

e:run{ jobs = 2 }
