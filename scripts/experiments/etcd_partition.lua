-- Leader election under a partition: a 3-node etcd cluster; the leader is cut off the network
-- at t = 2 s (or just after the cluster is up, if that takes longer), and the time until the
-- other two elect a new leader that answers writes is measured. 5 repetitions.
--
--   moonbox experiment scripts/experiments/etcd_partition.lua
local experiment = require "moonbox.experiment"
local recipe = require "moonbox.recipe"

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "scripts/experiments"
recipe.build(recipe.load(here .. "/recipes/etcd.lua"), { quiet = true })

local NODES = { "n1", "n2", "n3" }

local e = experiment.new{ name = "etcd-partition", out = "results/etcd-partition" }
e:param("election_ms", { 500, 1000 })
e:param("rep", { 1, 2, 3, 4, 5 })

local function endpoints(names)
  local list = {}
  for _, n in ipairs(names) do list[#list + 1] = "http://" .. n .. ":2379" end
  return table.concat(list, ",")
end

e:trial(function(t, p)
  local lab = t:network{ subnet = "10.91.0.0/24" }
  local cluster = {}
  for _, n in ipairs(NODES) do cluster[#cluster + 1] = n .. "=http://" .. n .. ":2380" end
  local nodes = {}
  for _, n in ipairs(NODES) do
    nodes[n] = t:container{ image = "exp-etcd:3.4", name = n, networks = { lab.name }, stdout = "null", stderr = "null",
      command = { "etcd", "--name", n, "--data-dir", "/var/lib/etcd-data",
        "--listen-peer-urls", "http://0.0.0.0:2380", "--listen-client-urls", "http://0.0.0.0:2379",
        "--advertise-client-urls", "http://" .. n .. ":2379", "--initial-advertise-peer-urls", "http://" .. n .. ":2380",
        "--initial-cluster", table.concat(cluster, ","), "--initial-cluster-state", "new",
        "--heartbeat-interval", tostring(p.election_ms // 10), "--election-timeout", tostring(p.election_ms) } }
    t:sample(nodes[n], { every = 0.2 })
  end
  local cli = t:container{ image = "exp-etcd:3.4", name = "cli", networks = { lab.name }, command = { "sleep", "3600" },
    env = { ETCDCTL_API = "3" } }
  cli:wait_exec({ "etcdctl", "--endpoints", endpoints(NODES), "put", "ready", "1" }, { timeout = 30 })
  -- Who leads: the member whose id is the leader id in its own status.
  local status = cli:exec({ "etcdctl", "--endpoints", endpoints(NODES), "endpoint", "status", "-w", "json" }).stdout
  local leader
  for endpoint, member, lead in status:gmatch('"Endpoint":"http://(%w+):2379".-"member_id":(%d+).-"leader":(%d+)') do
    if member == lead then leader = endpoint end
  end
  if not leader then error("no leader in: " .. status) end
  local others = {}
  for _, n in ipairs(NODES) do if n ~= leader then others[#others + 1] = n end end
  local cut = math.max(2.0, t:now() + 0.2)
  t:at(cut, function() lab:disconnect(leader) end)
  t:sleep_until(cut)
  local tries = 0
  while true do
    tries = tries + 1
    local r = cli:exec({ "etcdctl", "--endpoints", endpoints(others), "--command-timeout=250ms", "put", "k", tostring(tries) })
    if r.code == 0 then break end
    if t:now() > cut + 30 then error("no write succeeded within 30 s of the partition") end
  end
  local recovery = t:now() - cut
  t:mark("write accepted")
  t:record{ recovery_s = recovery, old_leader = leader, tries = tries }
end)

e:run{ jobs = 2 }
