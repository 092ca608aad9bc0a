-- moonbox.cli: the one argument parser of moonbox's commands (box, sandbox, build, test, gc,
-- image, network, experiment, oci), so that --help and errors look the same everywhere.
--
--   local opts = cli.parse("box", args, {
--     usage = "moonbox box --rootfs DIR [options] -- CMD [ARG...]",
--     options = {
--       { "--memory", "-m", kind = "size", help = "memory limit, e.g. 512M" },
--       { "--volume", "-v", kind = "list", metavar = "SRC:DST[:ro]", help = "bind mount" },
--       { "--init", kind = "flag", help = "a minimal init as PID 1" },
--     },
--     command = true,          -- what follows "--" is opts.command
--     positional = { "RECIPE" }, -- names of positional arguments, in opts.args
--   })
--
-- Kinds: flag, string, number, integer, seconds, size, list (repeatable), pairs (repeatable
-- NAME=VALUE into a table). "--opt=value" works too. A bad argument ends the run with one line,
-- "moonbox COMMAND: message", and the command's usage exit status.
--
-- cli.main(command, fn, status) runs a command's body: an error ends it with one line on
-- stderr, "moonbox COMMAND: message", and err.code (or `status`) as the exit status. The
-- traceback comes only with --debug or MOONBOX_DEBUG=1.
local check = require "moonbox.check"
local errors = require "moonbox.errors"

local cli = {}

cli.debug = os.getenv("MOONBOX_DEBUG") == "1"

--- Ends the run with "moonbox COMMAND: message" on stderr and `status`.
function cli.fail(command, message, status)
  io.stdout:flush()
  io.stderr:write("moonbox ", command, ": ", tostring(message), "\n")
  io.stderr:flush()
  os.exit(status or 2)
end

local function help_text(spec)
  local lines = { "usage: " .. spec.usage }
  if spec.about then lines[#lines + 1] = "\n" .. spec.about end
  if spec.options and #spec.options > 0 then
    lines[#lines + 1] = "\noptions:"
    for _, o in ipairs(spec.options) do
      local names = o[1] .. (o[2] and (", " .. o[2]) or "")
      local arg = o.kind ~= "flag" and (" " .. (o.metavar or (o.kind == "pairs" and "NAME=VALUE" or o.kind:upper()))) or ""
      lines[#lines + 1] = string.format("  %-28s %s", names .. arg, o.help or "")
    end
  end
  if spec.footer then lines[#lines + 1] = "\n" .. spec.footer end
  return table.concat(lines, "\n") .. "\n"
end
cli.help_text = help_text

--- Parses args for `command` by `spec`. Returns opts: option values by long name without the
-- dashes, args (positional), command (after "--").
function cli.parse(command, args, spec)
  local status = spec.status or 2
  local where = "moonbox " .. command
  local by_name = {}
  for _, o in ipairs(spec.options or {}) do
    by_name[o[1]] = o
    if o[2] then by_name[o[2]] = o end
    for _, alias in ipairs(o.aliases or {}) do by_name[alias] = o end
  end
  local opts = { args = {} }
  local function key(o) return o.key or o[1]:gsub("^%-+", "") end
  local i = 1
  local function fail(msg) cli.fail(command, msg .. "\n" .. "(moonbox " .. command .. " --help lists the options)", status) end
  while i <= #args do
    local a = args[i]
    if a == "--" and spec.command then
      opts.command = table.move(args, i + 1, #args, 1, {})
      break
    elseif a == "-h" or a == "--help" then
      io.stdout:write(help_text(spec))
      os.exit(0)
    elseif a:match("^%-") and a ~= "-" then
      local name, inline = a:match("^(%-%-[^=]+)=(.*)$")
      name = name or a
      local o = by_name[name]
      if not o then fail("unknown option " .. name) end
      local k = key(o)
      if o.kind == "flag" then
        if inline then fail(name .. " takes no value") end
        opts[k] = true
      else
        local v = inline
        if v == nil then
          i = i + 1
          v = args[i]
          if v == nil then fail(name .. " needs a value") end
        end
        local ok, value = pcall(function()
          if o.kind == "string" then return check.string(where, name, v, true) end
          if o.kind == "number" then return check.number(where, name, tonumber(v) or v, o.min, o.max) end
          if o.kind == "integer" then return check.integer(where, name, math.tointeger(tonumber(v)) or v, o.min, o.max) end
          if o.kind == "seconds" then return check.seconds(where, name, tonumber(v) or v) end
          if o.kind == "size" then return check.size(where, name, v, o.allow_max) end
          if o.kind == "list" then return v end
          if o.kind == "pairs" then
            local pk, pv = v:match("^([^=]+)=(.*)$")
            if not pk then check.fail(where, name .. " needs NAME=VALUE, got " .. check.show(v)) end
            return { pk, pv }
          end
          error("unknown option kind " .. tostring(o.kind))
        end)
        if not ok then cli.fail(command, (tostring(value):gsub("^moonbox " .. command .. ": ", "")), status) end
        if o.kind == "list" then
          opts[k] = opts[k] or {}
          table.insert(opts[k], value)
        elseif o.kind == "pairs" then
          opts[k] = opts[k] or {}
          opts[k][value[1]] = value[2]
        else
          opts[k] = value
        end
      end
    else
      if spec.command and spec.command_without_dashes and not spec.positional then
        opts.command = table.move(args, i, #args, 1, {})
        break
      end
      opts.args[#opts.args + 1] = a
    end
    i = i + 1
  end
  local max = spec.positional and #spec.positional or 0
  if not spec.any_positional and #opts.args > max then
    fail("unexpected argument " .. check.show(opts.args[max + 1]))
  end
  for n, pname in ipairs(spec.positional or {}) do
    if opts.args[n] == nil and not pname:match("^%[") then fail("missing " .. pname .. "\nusage: " .. spec.usage) end
  end
  return opts
end

--- A message without a leading "stdlib/...lua:LINE: " (it says nothing to a user of the command
-- line); a position in the user's own script stays.
function cli.without_stdlib_position(message)
  return (message:gsub("^[^%s:]*stdlib/[^%s:]+%.lua:%d+: ", ""))
end

--- Runs a command's body with moonbox's error rule: one line on stderr, and err.code (or
-- `status`) as the exit status; the traceback only with --debug. A bad input (a moonbox.check
-- error) exits with `usage_status` when given (the sandbox's 2, say), else with its own code.
function cli.main(command, fn, status, usage_status)
  local ok, err = xpcall(fn, function(e)
    if cli.debug then
      io.stderr:write(debug.traceback(tostring(e), 2), "\n")
    end
    return e
  end)
  if not ok then
    local code = errors.is(err) and math.type(err.code) == "integer" and err.code or status or 1
    if usage_status and errors.is(err) and err.op == "check" then code = usage_status end
    local message = tostring(errors.is(err) and err.message or err)
    -- A Lua error's "stdlib/...:LINE:" prefix says nothing to a user of the command line.
    message = cli.without_stdlib_position(message):gsub("^moonbox " .. command .. ": ", "")
    cli.fail(command, message, code)
  end
end

return cli
