-- moonbox.net.cli: `moonbox network create|ls|rm`, networks that outlive one moonbox process
-- (their namespace is held by a keeper process until rm).
local cli = require "moonbox.cli"
local json = require "moonbox.json"
local net = require "moonbox.net"
local errors = require "moonbox.errors"

local netcli = {}

local USAGE = "moonbox network create NAME [options] | ls [--json] | rm NAME... [--force]"

local specs = {
  create = {
    usage = "moonbox network create NAME [--subnet CIDR] [--subnet6 CIDR] [--host] [--masquerade] [--mtu N]",
    about = "Creates a network that stays until `moonbox network rm`. Containers join it with\n"
      .. "`moonbox box --network NAME [--ip ADDR]`, or networks = {NAME} in a script.",
    positional = { "NAME" },
    options = {
      { "--subnet", kind = "string", metavar = "CIDR", help = "IPv4 subnet (default 10.89.0.0/24 without --subnet6)" },
      { "--subnet6", kind = "string", metavar = "CIDR", help = "IPv6 subnet, e.g. fd89::/64" },
      { "--host", kind = "flag", help = "put the bridge in this network namespace, with the gateway address" },
      { "--masquerade", kind = "flag", help = "outbound NAT for a --host network (an iptables rule)" },
      { "--mtu", kind = "integer", min = 576, max = 65535, help = "MTU of the bridge and links" },
    },
  },
  ls = {
    usage = "moonbox network ls [--json]",
    about = "Lists the networks in the state folder.",
    options = { { "--json", kind = "flag", help = "one JSON array" } },
  },
  rm = {
    usage = "moonbox network rm NAME... [--force]",
    about = "Removes networks (their namespace, bridge, leases and records).",
    any_positional = true,
    options = { { "--force", "-f", kind = "flag", help = "remove even with containers on it (they lose their link)" } },
  },
}

function netcli.main(args)
  local sub = args[1]
  if sub == nil or sub == "-h" or sub == "--help" then
    io.stdout:write("usage: " .. USAGE .. "\n")
    os.exit(sub == nil and 2 or 0)
  end
  if sub == "list" then sub = "ls" end
  if sub == "remove" then sub = "rm" end
  local spec = specs[sub]
  if not spec then cli.fail("network", "unknown subcommand " .. sub .. " (create, ls, rm)\nusage: " .. USAGE, 2) end
  local opts = cli.parse("network " .. sub, { table.unpack(args, 2) }, spec)
  cli.main("network " .. sub, function()
    local ok, err = pcall(netcli[sub], opts, spec)
    -- a failure of the command is status 1 (as docker network's); a bad argument stays 2
    if not ok then
      if errors.is(err) and err.op ~= "check" then err.code = 1 end
      error(err, 0)
    end
  end, 1, 2)
  os.exit(0)
end

function netcli.create(opts)
  local n = net.create({ name = opts.args[1], subnet = opts.subnet, subnet6 = opts.subnet6, host = opts.host or nil,
    masquerade = opts.masquerade or nil, mtu = opts.mtu, persistent = true })
  print(n.name)
end

function netcli.ls(opts)
  local list = net.list()
  if opts.json then
    print(json.encode(list))
    return
  end
  print(string.format("%-16s %-18s %-22s %-6s %-8s %s", "NAME", "SUBNET", "SUBNET6", "MODE", "MEMBERS", "OWNER"))
  for _, n in ipairs(list) do
    print(string.format("%-16s %-18s %-22s %-6s %-8d %s", n.name, n.subnet or "-", n.subnet6 or "-", n.host and "host" or "lab",
      n.members, n.persistent and "persistent" or ("pid " .. tostring(n.owner) .. (n.alive and "" or " (gone)"))))
  end
end

function netcli.rm(opts, spec)
  if #opts.args == 0 then cli.fail("network rm", "give the NAME of a network\nusage: " .. spec.usage, 2) end
  for _, name in ipairs(opts.args) do
    net.remove(name, opts.force)
    print(name)
  end
end

return netcli
