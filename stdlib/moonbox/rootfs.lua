-- moonbox.rootfs: small root filesystems to run containers in.
--   rootfs.busybox(dir [, {busybox=path}])  a busybox-static tree with relative applet links
--   rootfs.from_tar(tar, dir)               unpack a rootfs tarball (what `docker export` makes)
local sys = require "moonbox.sys"
local process = require "moonbox.process"
local errors = require "moonbox.errors"
local check = require "moonbox.check"

local rootfs = {}

local BUSYBOX_PATHS = { "/bin/busybox", "/usr/bin/busybox" }

local function find_busybox()
  for _, p in ipairs(BUSYBOX_PATHS) do
    local st = sys.stat(p)
    if st and st.type == "file" then return p end
  end
  error("rootfs.busybox: no busybox binary found (install Debian's busybox-static)", 3)
end

local function copy_file(from, to, mode)
  local src = assert(io.open(from, "rb"))
  local data = src:read("a")
  src:close()
  local dst, err = io.open(to, "wb")
  if not dst then error("rootfs: cannot write " .. to .. ": " .. err, 3) end
  dst:write(data)
  dst:close()
  assert(sys.chmod(to, mode))
end

--- A path relative to `from_dir` (inside the rootfs) that reaches `/target`.
local function relative_link(link_path, target)
  local depth = select(2, link_path:gsub("/", ""))
  return string.rep("../", depth) .. target
end
rootfs.relative_link = relative_link

--- Builds a busybox root filesystem in `dir`: /bin/busybox, a link for every applet
-- (relative, so the tree works wherever it is mounted), and the usual top folders.
function rootfs.busybox(dir, opts)
  opts = opts or {}
  check.options("rootfs.busybox", opts, { busybox = true })
  if type(dir) ~= "string" or dir == "" then error("rootfs.busybox: dir must be a path", 2) end
  local busybox = opts.busybox or find_busybox()
  local probe = process.run({ busybox, "--list-full" })
  if probe.code ~= 0 then
    error("rootfs.busybox: " .. busybox .. " --list-full failed; is it busybox-static? " .. probe.stderr, 2)
  end
  for _, d in ipairs({ "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "var", "run", "home" }) do
    assert(sys.mkdir(dir .. "/" .. d))
  end
  assert(sys.chmod(dir .. "/tmp", tonumber("1777", 8)))
  copy_file(busybox, dir .. "/bin/busybox", tonumber("755", 8))
  for applet in probe.stdout:gmatch("[^\n]+") do
    if applet ~= "bin/busybox" then
      local path = dir .. "/" .. applet
      local parent = path:match("^(.*)/[^/]+$")
      assert(sys.mkdir(parent))
      if not sys.lstat(path) then assert(sys.symlink(relative_link(applet, "bin/busybox"), path)) end
    end
  end
  local files = {
    ["etc/passwd"] = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ["etc/group"] = "root:x:0:\nnogroup:x:65534:\n",
    ["etc/hostname"] = "moonbox\n",
  }
  for name, text in pairs(files) do
    local f = assert(io.open(dir .. "/" .. name, "w"))
    f:write(text)
    f:close()
  end
  return dir
end

--- Unpacks a root filesystem tarball (plain, gzip or zstd; what `docker export` makes) into
-- `dir`, keeping owners and modes, with moonbox's safe extraction: nothing outside `dir`,
-- nothing through a symlink, no device nodes or set-id bits unless asked (opts.allow_devices,
-- opts.allow_setuid).
function rootfs.from_tar(tar, dir, opts)
  opts = opts or {}
  check.options("rootfs.from_tar", opts, { allow_devices = true, allow_setuid = true })
  check.string("rootfs.from_tar", "tar", tar)
  check.string("rootfs.from_tar", "dir", dir)
  if not sys.stat(tar) then errors.raise("rootfs.from_tar: no such file: " .. tar, { op = "rootfs" }, 2) end
  errors.check({ op = "mkdir" }, sys.mkdir(dir))
  local ok, msg = sys.archive_extract(tar, dir, { allow_devices = opts.allow_devices or false, allow_setuid = opts.allow_setuid or false })
  if not ok then errors.raise("rootfs.from_tar: " .. msg, { op = "extract" }, 2) end
  return dir
end

return rootfs
