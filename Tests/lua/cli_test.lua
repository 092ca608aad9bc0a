-- The command line, driven as a subprocess the way users run it.
local sys = require "moonbox.sys"
local process = require "moonbox.process"
local fs = require "moonbox.fs"

local moonbox = assert(sys.readlink("/proc/self/exe"))

local function run(args, opts)
  local argv = { moonbox }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return process.run(argv, opts)
end

describe("moonbox run", function()
  local dir
  before_each(function() dir = fs.tempdir("cli-test-") end)
  after_each(function() dir:remove() end)

  it("passes arg and ... as lua does, and exits with os.exit's code", function()
    local script = fs.write(dir.path .. "/s.lua", "print(arg[0], arg[1], arg[2], select('#', ...), ...) os.exit(7)")
    local r = run({ "run", script, "a", "--flag" })
    expect(r.code).to_be(7)
    expect(r.stdout).to_be(script .. "\ta\t--flag\t2\ta\t--flag\n")
  end)

  it("runs a script given alone, and through a #! line", function()
    local script = fs.write(dir.path .. "/hello", "#!" .. moonbox .. "\nprint('hello ' .. (arg[1] or ''))\n", tonumber("755", 8))
    expect(run({ script, "x" }).stdout).to_be("hello x\n")
    expect(process.run({ script, "shebang" }).stdout).to_be("hello shebang\n")
  end)

  it("exits 0 when the script ends normally and runs -e chunks", function()
    local r = run({ "run", "-e", "print(1 + 1)" })
    expect(r.code).to_be(0)
    expect(r.stdout).to_be("2\n")
  end)

  it("prints an uncaught error as one line with file and line, and the traceback only with --debug", function()
    local script = fs.write(dir.path .. "/bad.lua", "local function f()\n  error('it broke')\nend\nf()\n")
    local r = run({ "run", script })
    expect(r.code).to_be(1)
    expect(r.stderr).to_be("moonbox: " .. script .. ":2: it broke\n")
    r = run({ "--debug", "run", script })
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("^moonbox: " .. script:gsub("%p", "%%%0") .. ":2: it broke\n")
    expect(r.stderr).to_match("stack traceback:")
    expect(r.stderr).to_match("in local 'f'")
    r = run({ "run", script }, { env = { MOONBOX_DEBUG = "1" } })
    expect(r.stderr).to_match("stack traceback:")
    -- A stdlib error names the script's own line, not the stdlib's.
    local spec = fs.write(dir.path .. "/spec.lua", "local c = require 'moonbox.container'\nc.run({ command = { 'true' } })\n")
    r = run({ "run", spec })
    expect(r.stderr).to_be("moonbox: " .. spec .. ":2: container spec: rootfs is required (a folder holding the container's files), or an image\n")
  end)

  it("reports syntax errors with file and line", function()
    local script = fs.write(dir.path .. "/syntax.lua", "local x = 1\nx = = 2\n")
    local r = run({ "run", script })
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("^moonbox: " .. script:gsub("%p", "%%%0") .. ":2: unexpected symbol near '='")
  end)

  it("reports a missing script", function()
    local r = run({ "run", dir.path .. "/missing.lua" })
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("cannot open " .. (dir.path .. "/missing.lua"):gsub("%p", "%%%0"))
  end)

  it("reports errors raised by primitives at the caller's line", function()
    local r = run({ "run", "-e", "local sys = require 'moonbox.sys'\nsys.mount(nil, {})" })
    expect(r.code).to_be(1)
    expect(r.stderr).to_match("^moonbox: %(command line%):2: mount: bad argument #2 'target'")
  end)

  it("prints the version and a help with examples", function()
    expect(run({ "--version" }).stdout).to_match("^%d+%.%d+%.%d+")
    local help = run({ "--help" }).stdout
    expect(help).to_match("Examples:")
    expect(help).to_match("moonbox run")
  end)

  it("finds the stdlib when the binary is copied alone elsewhere", function()
    local copy = dir.path .. "/moonbox-copy"
    fs.write(copy, fs.read(moonbox), tonumber("755", 8))
    local r = process.run({ copy, "run", "-e", "print(require('moonbox.json').encode({1}))" },
      { env = { PATH = "/usr/bin:/bin" }, cwd = "/" })
    expect(r.stderr).to_be("")
    expect(r.stdout).to_be("[1]\n")
  end)

  it("loads stdlib modules from MOONBOX_PATH first", function()
    assert(sys.mkdir(dir.path .. "/lib/moonbox"))
    fs.write(dir.path .. "/lib/moonbox/json.lua", "return { encode = function() return 'overridden' end }")
    local r = process.run({ moonbox, "run", "-e", "print(require('moonbox.json').encode({}))" },
      { env = { MOONBOX_PATH = dir.path .. "/lib" } })
    expect(r.stdout).to_be("overridden\n")
  end)

  it("runs the repl on stdin", function()
    local r = run({ "repl" }, { stdin = "1 + 2\nlocal t = {\n}\nprint(sys.getpid() > 0)\nerror('x')\n" })
    expect(r.code).to_be(0)
    expect(r.stdout).to_match("3\n")
    expect(r.stdout).to_match("true\n")
    expect(r.stderr).to_match("x")
  end)

  it("stays single-threaded, so fork and setns are safe", function()
    local r = run({ "run", "-e", "print(io.open('/proc/self/status'):read('a'):match('Threads:%s+(%d+)'))" })
    expect(r.stdout).to_be("1\n")
  end)
end)

describe("errors from every command", function()
  it("are one line, moonbox COMMAND: message, with the documented status, and no traceback", function()
    local store <close> = fs.tempdir("cli-store-")
    local env = { MOONBOX_ROOT = store.path, MOONBOX_STATE = store.path .. "/state", PATH = "/usr/bin:/bin" }
    local cases = {
      { { "image", "rm", "nosuch:9" }, 1, "^moonbox image: image: no image nosuch:9\n$" },
      { { "image", "export", "nosuch:1", store.path .. "/out" }, 1, "^moonbox image: image: no image nosuch:1" },
      { { "image", "import", store.path, "BAD NAME!!" }, 1, "is not a valid reference" },
      { { "gc", "--force" }, 2, "^moonbox gc: unknown option %-%-force" },
      { { "box", "--rootfs", "/", "--timeout", "1e300", "--", "true" }, 125, "^moonbox box: %-%-timeout must be a finite number" },
      { { "box", "--rootfs", "/", "--memory", "99999999999999G", "--", "true" }, 125, "is too large %(the largest size is 8 EiB%)" },
      { { "box", "--rootfs", "/", "-e", "NOEQUALS", "--", "true" }, 125, "^moonbox box: %-e needs NAME=VALUE" },
      { { "sandbox", "--rootfs", "/", "--time", "1e308", "--", "true" }, 2, "^moonbox sandbox: %-%-time must be a finite number" },
      { { "build", "/nonexistent/recipe.lua" }, 1, "^moonbox build: recipe: cannot open /nonexistent/recipe.lua" },
      { { "pull", "nohost" }, 1, "^moonbox pull: registry: nohost names no registry host" },
    }
    for _, c in ipairs(cases) do
      local r = process.run({ moonbox, table.unpack(c[1]) }, { env = env })
      expect(r.code).to_be(c[2])
      expect(r.stderr).to_match(c[3])
      expect(r.stderr).not_to_match("traceback")
      expect(r.stderr).not_to_match("stdlib/")
    end
  end)
end)

describe("moonbox test", function()
  it("ends with the summary line and a failing status when a test fails", function()
    local dir <close> = fs.tempdir("cli-test-")
    fs.write(dir.path .. "/x_test.lua", [[
      describe("d", function()
        it("ok", function() expect(1).to_be(1) end)
        it("bad", function() expect(1).to_be(2) end)
        it("later", function() skip("not today") end)
      end)
    ]])
    local r = run({ "test", dir.path })
    expect(r.code).to_be(1)
    expect(r.stdout).to_match("\n1 passed, 1 failed, 1 skipped\n$")
    expect(r.stdout).to_match("x_test.lua:3: expected: 2\n    actual: 1")
    local tap = run({ "test", "--tap", "--filter", "ok", dir.path })
    expect(tap.code).to_be(0)
    expect(tap.stdout).to_match("^ok 1 %- d > ok\n1%.%.1\n")
    run({ "test", "--junit", dir.path .. "/j.xml", dir.path })
    expect(fs.read(dir.path .. "/j.xml")).to_match('<testsuite name="moonbox" tests="3" failures="1" errors="0" skipped="1">')
    expect(run({ "test", "--bogus" }).stderr).to_match("unknown option %-%-bogus")
  end)
end)
