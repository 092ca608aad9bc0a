-- Every exit path clean: a build, an import, a sandbox run and a kept box are interrupted with
-- SIGINT, SIGTERM or SIGKILL (then gc) while they work, and nothing stays: no temporary files or
-- images in the store, no records or boxes in the state folder, no mounts, no cgroups.
local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local json = require "moonbox.json"
local process = require "moonbox.process"
local rootfs = require "moonbox.rootfs"
local image = require "moonbox.image"
local test = require "moonbox.test"

local moonbox = assert(sys.readlink("/proc/self/exe"))
local base, root, host_before

local function setup()
  if root then return end
  base = fs.tempdir("exit-paths")
  assert(sys.chmod(base.path, tonumber("755", 8)))
  root = rootfs.busybox(base.path .. "/rootfs")
  host_before = test.host_state()
end

local function listing(dir)
  local out = {}
  for _, n in ipairs(sys.listdir(dir) or {}) do out[#out + 1] = n end
  return out
end

-- A fresh store and state folder per case; the base image is imported into the store first.
local function place(name)
  local p = { store = base.path .. "/" .. name .. "-store", state = base.path .. "/" .. name .. "-state" }
  local r = process.run({ moonbox, "image", "import", root, "base:1" }, { env = { MOONBOX_ROOT = p.store, MOONBOX_STATE = p.state } })
  assert(r.code == 0, r.stderr)
  p.env = { MOONBOX_ROOT = p.store, MOONBOX_STATE = p.state, PATH = "/usr/bin:/bin:/usr/sbin:/sbin" }
  return p
end

local function spawn(argv, env)
  local pid = assert(sys.fork())
  if pid == 0 then
    local null = assert(sys.open("/dev/null", "rdwr"))
    sys.dup2(null, 1)
    sys.dup2(null, 2)
    process.exec(argv, env)
    sys._exit(127)
  end
  return pid
end

-- What must be gone: temporary files and images in the store, records and boxes in the state
-- folder, and any change to the host's mounts or moonbox cgroups.
local function expect_clean(p)
  expect(listing(p.store .. "/tmp")).to_equal({})
  expect(listing(p.store .. "/containers")).to_equal({})
  local names = {}
  image.use_root(p.store)
  for _, i in ipairs(image.list()) do names[#names + 1] = i.name end
  image.use_root(nil)
  expect(names).to_equal({ "base:1" })
  local left = {}
  for _, n in ipairs(listing(p.state)) do if n ~= "cache" and n ~= "boxes" then left[#left + 1] = n end end
  expect(left).to_equal({})
  expect(listing(p.state .. "/boxes")).to_equal({})
  expect(test.host_state()).to_equal(host_before)
end

-- The jobs, each with a sign that it is under way.
local jobs = {
  build = function(p)
    local dir = base.path .. "/recipe-" .. math.random(1 << 30)
    assert(sys.mkdir(dir))
    local file = fs.write(dir .. "/recipe.lua", [[return recipe "slow:1" { from "base:1", run "sleep 30" }]])
    return { moonbox, "build", file }, function() return #listing(p.store .. "/containers") > 0 end
  end,
  import = function(p)
    local dir = base.path .. "/big-" .. math.random(1 << 30)
    assert(sys.mkdir(dir .. "/rootfs"))
    for i = 1, 40 do
      local f = io.open(dir .. "/rootfs/blob" .. i, "wb")
      f:write(string.rep(string.char(i), 4 << 20))
      f:close()
    end
    local tar = dir .. "/big.tar"
    assert(process.run({ "tar", "-cf", tar, "-C", dir .. "/rootfs", "." }).code == 0)
    return { moonbox, "image", "import", tar, "big:1" }, function() return #listing(p.store .. "/tmp") > 0 end
  end,
  sandbox = function(p)
    return { moonbox, "sandbox", "--rootfs", root, "--wall-time", "60", "--time", "60", "--", "/bin/sleep", "30" },
      function() return #listing(p.state .. "/boxes") > 0 and #listing(p.state) > 2 end
  end,
  kept_box = function(p)
    local script = fs.write(base.path .. "/kept-" .. math.random(1 << 30) .. ".lua", [[
      local sandbox = require "moonbox.sandbox"
      local box <close> = sandbox.open({ rootfs = arg[1], wall_time = 60, time = 60 })
      box:run({ "/bin/true" })
      box:run({ "/bin/sleep", "30" })
    ]])
    return { moonbox, "run", script, root }, function() return #listing(p.state .. "/boxes") > 0 and #listing(p.state) > 3 end
  end,
}

describe("interrupted work leaves nothing", function()
  before_each(function() needs_root() setup() end)

  for _, job in ipairs({ "build", "import", "sandbox", "kept_box" }) do
    for _, sig in ipairs({ "INT", "TERM", "KILL" }) do
      it(job .. ", interrupted with SIG" .. sig .. (sig == "KILL" and ", then gc" or ""), function()
        local p = place(job .. "-" .. sig)
        local argv, started = jobs[job](p)
        local pid = spawn(argv, p.env)
        expect(eventually(started)).to_be(true)
        sys.nanosleep(0.1)
        assert(sys.kill(pid, sig))
        local st = sys.wait(pid)
        expect(st.signal_name).to_be(sig)
        if sig == "KILL" then
          -- What died with moonbox goes with it; gc removes the rest.
          sys.nanosleep(0.2)
          local r = process.run({ moonbox, "gc" }, { env = p.env })
          expect(r.stderr).to_be("")
          expect(r.code).to_be(0)
        end
        expect_clean(p)
      end)
    end
  end
end)

describe("exit paths teardown", function()
  it("removes what the tests made", function()
    if base then base:remove() end
    base, root = nil, nil
  end)
end)
