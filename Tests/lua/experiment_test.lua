-- Experiments: grids run in parallel worker processes, resumable results, faults on the trial's
-- clock, isolation between parallel trials, errors as data, cleanup after Ctrl-C, the report
-- checked with a real HTML parser, trials as tests; and the container readiness and
-- filesystem faults experiments use.
local sys = require "moonbox.sys"
local fs = require "moonbox.fs"
local json = require "moonbox.json"
local process = require "moonbox.process"
local rootfs = require "moonbox.rootfs"
local container = require "moonbox.container"
local experiment = require "moonbox.experiment"
local state = require "moonbox.state"
local test = require "moonbox.test"
local loop = require "moonbox.loop"

local moonbox = assert(sys.readlink("/proc/self/exe"))
local base, root

local function setup()
  if root then return end
  base = fs.tempdir("experiment-test")
  assert(sys.chmod(base.path, tonumber("755", 8)))
  root = rootfs.busybox(base.path .. "/rootfs")
end

-- Writes an experiment file into a fresh folder; ROOT in the text becomes the busybox rootfs.
local n_files = 0
local function experiment_file(text)
  n_files = n_files + 1
  local dir = base.path .. "/e" .. n_files
  assert(sys.mkdir(dir, tonumber("755", 8)))
  local path = dir .. "/exp.lua"
  fs.write(path, (text:gsub("ROOT", root)))
  return path, dir
end

local function run_experiment(path, args)
  local argv = { moonbox, "experiment", path }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return process.run(argv)
end

local function records(dir)
  local out = {}
  for line in (fs.read_if_exists(dir .. "/out/results.jsonl") or ""):gmatch("[^\n]+") do out[#out + 1] = json.decode(line) end
  table.sort(out, function(a, b) return a.trial < b.trial end)
  return out
end

-- The report through Python's html.parser: tags balanced, and what each plot has.
local HTML_CHECK = [[
import sys, json
from html.parser import HTMLParser
VOID = {"meta", "br", "img", "input", "link", "hr", "circle", "line", "polyline", "polygon", "rect", "path"}
class Check(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.svgs, self.doctype = [], [], [], False
    def handle_decl(self, decl):
        self.doctype = decl.lower() == "doctype html"
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg":
            self.svgs.append({"x_ticks": 0, "y_ticks": 0, "series": 0, "title": ""})
        if self.svgs and self.stack.count("svg"):
            s = self.svgs[-1]
            if tag == "g" and a.get("class") == "x-ticks": s["x_ticks"] += 1
            if tag == "g" and a.get("class") == "y-ticks": s["y_ticks"] += 1
            if tag == "g" and a.get("class") == "series": s["series"] += 1
        if tag in ("script", "iframe") or any(k in ("src", "href") and v and "://" in v for k, v in attrs):
            self.errors.append("fetches or scripts: <%s>" % tag)
        if tag not in VOID: self.stack.append(tag)
    def handle_endtag(self, tag):
        if tag in VOID: return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append("unexpected </%s> with %s open" % (tag, self.stack[-3:]))
        else:
            self.stack.pop()
c = Check()
c.feed(open(sys.argv[1], encoding="utf-8").read())
c.close()
if c.stack: c.errors.append("unclosed: %s" % c.stack)
print(json.dumps({"errors": c.errors, "svgs": c.svgs, "doctype": c.doctype}))
]]

local function check_html(path)
  local r = process.run({ "python3", "-c", HTML_CHECK, path })
  assert(r.code == 0, r.stderr)
  return json.decode(r.stdout)
end

describe("moonbox.experiment", function()
  before_each(function()
    needs_root()
    if not sys.stat("/usr/bin/python3") then skip("python3 is not installed (the report is checked with html.parser)") end
    setup()
  end)

  it("runs a 2x2 grid with 2 jobs and writes every output, and a valid report with plots", function()
    local path, dir = experiment_file([[
      local experiment = require "moonbox.experiment"
      local e = experiment.new{ name = "grid", out = "OUT" }
      e:param("size", { 1, 2 })
      e:param("rep", { 1, 2 })
      e:trial(function(t, p)
        local c = t:container{ rootfs = "ROOT", name = "w", command = { "sh", "-c", "sleep 0.6" } }
        t:sample(c, { every = 0.1 })
        t:at(0.2, function() end, "tick")
        c:wait()
        t:record{ score = p.size * 10 + p.rep, word = "w" .. p.size }
      end)
      e:run{ jobs = 2 }
    ]])
    fs.write(path, fs.read(path):gsub("OUT", dir .. "/out"))
    local r = run_experiment(path)
    expect(r.code).to_be(0)
    expect(r.stderr).to_match("4 trials run %(4 ok, 0 failed%)")
    local recs = records(dir)
    expect(#recs).to_be(4)
    for i, rec in ipairs(recs) do
      expect(rec.status).to_be("ok")
      expect(rec.trial).to_be(i)
      expect(rec.values.score).to_be(rec.params.size * 10 + rec.params.rep)
      expect(rec.duration).to_be_at_least(0.5)
    end
    local csv = fs.read(dir .. "/out/results.csv")
    expect(csv).to_match("^trial,label,status,duration,size,rep,score,word,error\n")
    expect(select(2, csv:gsub("\n", ""))).to_be(5)
    for _, rec in ipairs(recs) do
      local series = fs.read(dir .. "/out/" .. rec.series)
      expect(series).to_match("^t,container,cpu_seconds")
      expect(series).to_match("\n[%d.]+,w,")
      expect(series).to_match(",tick\n")
    end
    local meta = json.decode(fs.read(dir .. "/out/meta.json"))
    for _, k in ipairs({ "moonbox", "kernel", "cpus", "cgroup", "seed", "started" }) do expect(meta[k]).not_to_be(nil) end
    local html = check_html(dir .. "/out/report.html")
    expect(html.errors).to_equal({})
    expect(html.doctype).to_be(true)
    -- score by size and by rep is not plotted (rep averages): score by size, then the series
    expect(#html.svgs).to_be_at_least(1 + 4 * 2)
    for _, s in ipairs(html.svgs) do
      expect(s.x_ticks).to_be(1)
      expect(s.y_ticks).to_be(1)
      expect(s.series).to_be_at_least(1)
    end
  end)

  it("resumes a killed run, running only the trials that are missing", function()
    local path, dir = experiment_file([[
      local experiment = require "moonbox.experiment"
      local e = experiment.new{ name = "resume", out = "DIR/out" }
      e:param("i", { 1, 2, 3, 4, 5, 6 })
      e:trial(function(t, p)
        local f = io.open("DIR/ran", "a") f:write(p.i, "\n") f:close()
        local c = t:container{ rootfs = "ROOT", name = "s", command = { "sleep", "0.4" } }
        c:wait()
        t:record{ i = p.i }
      end)
    ]])
    fs.write(path, fs.read(path):gsub("DIR", dir))
    local pid = assert(sys.fork())
    if pid == 0 then sys.exec({ moonbox, "experiment", path, "--jobs", "1", "--quiet" }) end
    test.eventually(function() return #records(dir) >= 2 end, 20)
    assert(sys.kill(pid, "KILL"))
    sys.wait(pid)
    -- SIGKILL: the worker's trial is orphaned; gc takes its container
    process.run({ moonbox, "gc" })
    local done = #records(dir)
    expect(done).to_be_at_least(2)
    fs.write(dir .. "/ran", "")
    local r = run_experiment(path, { "--jobs", "2" })
    expect(r.code).to_be(0)
    expect(r.stderr).to_match(done .. " of 6 trials already recorded")
    local ran = {}
    for line in fs.read(dir .. "/ran"):gmatch("%d+") do ran[#ran + 1] = tonumber(line) end
    expect(#ran).to_be(6 - done)
    expect(#records(dir)).to_be(6)
    -- a third run has nothing to do; --fresh runs everything again
    r = run_experiment(path)
    expect(r.stderr).to_match("0 trials run")
    r = run_experiment(path, { "--fresh", "--only", "i=[12]$" })
    expect(r.stderr).to_match("2 trials run")
  end)

  it("fires faults within 50 ms of their time on the trial's clock, and marks them", function()
    local path, dir = experiment_file([[
      local experiment = require "moonbox.experiment"
      local e = experiment.new{ name = "timing", out = "DIR/out" }
      e:trial(function(t, p)
        local lab = t:network{ subnet = "10.91.0.0/24" }
        local srv = t:container{ rootfs = "ROOT", name = "srv", networks = { lab.name }, command = { "sleep", "30" } }
        t:at(0.5, function() lab:disconnect("srv") end)
        t:at(1.0, function() lab:connect("srv") end)
        t:at(1.25, function() srv:pause() end)
        t:at(1.5, function() srv:resume() end)
        t:run{ rootfs = "ROOT", command = { "sleep", "1.8" } }
      end)
    ]])
    fs.write(path, fs.read(path):gsub("DIR", dir))
    local r = run_experiment(path)
    expect(r.code).to_be(0)
    local rec = records(dir)[1]
    expect(rec.status).to_be("ok")
    local want = { ["disconnect srv"] = 0.5, ["connect srv"] = 1.0, ["pause srv"] = 1.25, ["resume srv"] = 1.5 }
    local seen = 0
    for _, ev in ipairs(rec.events) do
      if want[ev.label] then
        seen = seen + 1
        expect(math.abs(ev.t - want[ev.label])).to_be_at_most(0.05)
        expect(ev.planned).to_be(want[ev.label])
      end
    end
    expect(seen).to_be(4)
    expect(fs.read(dir .. "/out/" .. rec.series)).to_match("disconnect srv")
  end)

  it("keeps parallel trials apart: the same names, subnets and addresses never collide", function()
    local path, dir = experiment_file([[
      local experiment = require "moonbox.experiment"
      local e = experiment.new{ name = "iso", out = "DIR/out" }
      e:param("k", { 1, 2, 3, 4 })
      e:trial(function(t, p)
        local lab = t:network{ name = "lab", subnet = "10.92.0.0/24" }
        local srv = t:container{ rootfs = "ROOT", name = "srv", networks = { lab = { ip = "10.92.0.10" } },
          command = { "sh", "-c", "while true; do echo k" .. p.k .. " | nc -l -p 80; done" } }
        srv:wait_port(80, { timeout = 10 })
        local r = t:run{ rootfs = "ROOT", name = "cli", networks = { "lab" }, stdout = "capture",
          command = { "sh", "-c", "nc srv 80; hostname" } }
        t:record{ reply = (r.stdout:gsub("\n", " ")) }
      end)
    ]])
    fs.write(path, fs.read(path):gsub("DIR", dir))
    local r = run_experiment(path, { "--jobs", "4" })
    expect(r.code).to_be(0)
    for _, rec in ipairs(records(dir)) do
      expect(rec.status).to_be("ok")
      expect(rec.values.reply).to_be("k" .. rec.params.k .. " cli ")
    end
  end)

  it("records an erroring trial with its message and runs the others", function()
    local path, dir = experiment_file([[
      local experiment = require "moonbox.experiment"
      local e = experiment.new{ name = "errs", out = "DIR/out" }
      e:param("x", { 1, 2, 3 })
      e:trial(function(t, p)
        local c = t:container{ rootfs = "ROOT", name = "c", command = { "sleep", "10" } }
        if p.x == 2 then error("x two is bad") end
        if p.x == 3 then c:wait_port(9, { timeout = 0.2 }) end
        t:record{ x = p.x }
      end)
    ]])
    fs.write(path, fs.read(path):gsub("DIR", dir))
    local r = run_experiment(path, { "--jobs", "3" })
    expect(r.code).to_be(0)
    local recs = records(dir)
    expect(recs[1].status).to_be("ok")
    expect(recs[2].status).to_be("error")
    expect(recs[2].error).to_match("exp.lua:6: x two is bad")
    expect(recs[3].status).to_be("error")
    expect(recs[3].error).to_match("no listener on port 9/tcp after 0.2 s")
    expect(fs.read(dir .. "/out/results.csv")).to_match("x two is bad")
    local html = check_html(dir .. "/out/report.html")
    expect(html.errors).to_equal({})
    -- nothing of the trials is left
    for _, rec in ipairs(state.list()) do expect(rec.id).not_to_match("^errs%-") end
  end)

  it("leaves nothing after Ctrl-C: networks, containers, relays and proxies", function()
    local path, dir = experiment_file([[
      local experiment = require "moonbox.experiment"
      local e = experiment.new{ name = "intr", out = "DIR/out" }
      e:param("k", { 1, 2 })
      e:trial(function(t, p)
        local lab = t:network{ subnet = "10.93.0.0/24" }
        local a = t:container{ rootfs = "ROOT", name = "a", networks = { lab.name }, command = { "sleep", "60" } }
        local b = t:container{ rootfs = "ROOT", name = "b", networks = { lab.name }, command = { "sleep", "60" } }
        lab:shape("a", { engine = "relay", delay = 0.01 })
        local f = io.open("DIR/up" .. p.k, "w") f:close()
        a:wait()
      end)
    ]])
    fs.write(path, fs.read(path):gsub("DIR", dir))
    local before = test.host_state()
    local pid = assert(sys.fork())
    if pid == 0 then sys.exec({ moonbox, "experiment", path, "--jobs", "2", "--quiet" }) end
    test.eventually(function() return sys.stat(dir .. "/up1") and sys.stat(dir .. "/up2") end, 30)
    expect(#state.list()).to_be_at_least(4)
    assert(sys.kill(pid, "INT"))
    local st = sys.wait(pid)
    expect(st.signal_name).to_be("INT")
    for _, rec in ipairs(state.list()) do expect(rec.id).not_to_match("intr%-") end
    expect(test.host_state()).to_equal(before)
    local out = process.run({ "ps", "-eo", "args" }).stdout
    expect(out).not_to_match("moonbox%-relay")
    expect(out).not_to_match("intr%-")
  end)

  it("refuses bad input with messages that name it", function()
    local e = experiment.new({ name = "bad" })
    expect(function() e:param("x", {}) end).to_fail("non%-empty list")
    expect(function() e:param("x", { {} }) end).to_fail("x%[1%] must be a number, string or boolean")
    e:param("x", { 1 })
    expect(function() e:param("x", { 2 }) end).to_fail("declared twice")
    expect(function() experiment.new({ name = "../x" }) end).to_fail("name")
    expect(function() experiment.new({ name = "ok", bogus = 1 }) end).to_fail("unknown option 'bogus'")
    expect(function() e:run() end).to_fail("no trial function")
    local path = experiment_file([[
      local e = require("moonbox.experiment").new{ name = "cli" }
      e:param("loss", { 0 })
      e:trial(function() end)
    ]])
    local r = run_experiment(path, { "--param", "nosuch=1" })
    expect(r.code).to_be(2)
    expect(r.stderr).to_match("^moonbox experiment: .*%-%-param nosuch: no such parameter %(known: loss%)\n$")
    r = run_experiment(path, { "--jobs", "0" })
    expect(r.code).to_be(2)
    r = run_experiment(base.path .. "/nosuch.lua")
    expect(r.stderr).to_match("^moonbox experiment: .*nosuch.lua")
  end)

  it("runs an experiment's trials as tests (moonbox test), with expect inside", function()
    local path = experiment_file([[
      local e = require("moonbox.experiment").new{ name = "astests" }
      e:param("v", { 1, 2 })
      e:trial(function(t, p)
        local r = t:run{ rootfs = "ROOT", command = { "sh", "-c", "exit " .. p.v - 1 } }
        expect(r.code).to_be(0)
      end)
      e:run()
    ]])
    local junit = base.path .. "/junit.xml"
    local r = process.run({ moonbox, "test", "--junit", junit, path })
    expect(r.code).to_be(1)
    expect(r.stdout).to_match("1 passed, 1 failed")
    expect(r.stdout).to_match("FAILED: astests > v=2")
    expect(fs.read(junit)).to_match('<testcase[^>]*name="[^"]*v=1"')
  end)

  it("gives a test the same t as a scenario, cleaned up by <close>", function()
    local id
    do
      local t <close> = experiment.scenario("scn")
      local lab = t:network{ subnet = "10.94.0.0/24" }
      local a = t:container{ rootfs = root, name = "a", networks = { lab.name }, command = { "sleep", "30" } }
      local r = t:run{ rootfs = root, networks = { lab.name }, command = { "ping", "-c", "1", "-W", "2", "a" }, stdout = "capture" }
      expect(r.code).to_be(0)
      id = a.id
      expect(id).to_match("^scn%-%d+%-%d+%-a$")
    end
    expect(state.find(id)).to_be(nil)
  end)
end)

describe("container readiness and filesystem faults", function()
  before_each(function() needs_root() setup() end)

  it("waits for a log line, a port, a file and a command; says why when it cannot", function()
    local c <close> = container.new({ rootfs = root, stdout = "capture", command = { "sh", "-c",
      "echo starting; sleep 0.3; echo ready on 7777; touch /tmp/flag; nc -l -p 7777; sleep 30" } })
    c:start()
    expect(c:wait_log("ready on (%d+)")).to_be("7777")
    expect(c:wait_port(7777, { timeout = 5 })).to_be(true)
    expect(c:wait_file("/tmp/flag")).to_be(true)
    expect(c:wait_exec({ "test", "-e", "/tmp/flag" }).code).to_be(0)
    expect(function() c:wait_port(7778, { timeout = 0.1 }) end).to_fail("no listener on port 7778/tcp after 0.1 s")
    expect(function() c:wait_exec({ "false" }, { timeout = 0.3 }) end).to_fail("last exit 1")
    expect(function() c:wait_exec({ "/nonexistent" }) end).to_fail("nonexistent")
    expect(function() c:wait_log("x", { stream = "stderr" }) end).to_fail("not captured")
    expect(function() c:wait_port(0) end).to_fail("port must be a whole number from 1 to 65535")
    -- the output stays in the result
    c:kill("KILL")
    expect(c:wait().stdout).to_match("starting\nready on 7777\n")
  end)

  it("says so when the container ends before it is ready", function()
    local c <close> = container.new({ rootfs = root, command = { "sh", "-c", "exit 3" } })
    c:start()
    expect(function() c:wait_port(80, { timeout = 5 }) end).to_fail("ended %(exited 3%) before listener on port 80/tcp")
  end)

  it("fills a tmpfs, remounts a mount read-only and back, and restarts on the same networks", function()
    local net = require "moonbox.net"
    local lab <close> = net.create({ name = "ready-lab", subnet = "10.95.0.0/24" })
    local c <close> = container.new({ rootfs = root, name = "rdy", networks = { lab }, command = { "sleep", "60" },
      mounts = { { type = "tmpfs", target = "/scratch", size = "2M" } } })
    c:start()
    local f = c:fill("/scratch")
    expect(f.bytes).to_be_at_least(1 << 20)
    expect(c:exec({ "sh", "-c", "echo x > /scratch/y" }).stderr).to_match("No space left")
    c:exec({ "rm", f.file })
    c:remount("/scratch")
    expect(c:exec({ "sh", "-c", "echo x > /scratch/y" }).stderr).to_match("Read%-only")
    c:remount("/scratch", { readonly = false })
    expect(c:exec({ "sh", "-c", "echo x > /scratch/y" }).code).to_be(0)
    expect(function() c:fill("/scratch/../../x/..", { bogus = 1 }) end).to_fail("unknown option 'bogus'")
    local old_pid, ip = c.pid, c:ip()
    c:restart(1)
    expect(c.pid).not_to_be(old_pid)
    expect(c.state).to_be("running")
    expect(c:ip()).to_be(ip)
    expect(c:exec({ "test", "-e", "/scratch/y" }).code).to_be(1)  -- a fresh tmpfs
  end)
end)
