-- moonbox.fs: file helpers over moonbox.sys and io, and temporary folders that clean up.
--   local dir <close> = fs.tempdir("demo-")   -- removed (never across mounts) when it goes
-- Failures raise moonbox.error objects; fs.read_if_exists returns nil for a missing file.
local sys = require "moonbox.sys"
local errors = require "moonbox.errors"
local cleanup = require "moonbox.cleanup"

local fs = {}

local TempDir = { __name = "moonbox.tempdir" }
TempDir.__index = TempDir
TempDir.__tostring = function(d) return "tempdir(" .. d.path .. ")" end

--- Removes the folder now; later calls do nothing.
function TempDir:remove()
  if self.path and not self.removed and self.owner == sys.getpid() then
    self.removed = true
    cleanup.remove(self.token)
    local ok, err = sys.remove_tree(self.path)
    if not ok then errors.raise("tempdir: " .. err, { op = "remove_tree" }, 2) end
  end
end
TempDir.__close = function(d) d:remove() end
-- Only the process that made it removes it: a forked child's copy of the handle must not.
TempDir.__gc = function(d)
  if not d.removed and d.owner == sys.getpid() then pcall(TempDir.remove, d) end
end

--- The folder for moonbox's temporary files: $TMPDIR, or /tmp.
function fs.tmp_base() return os.getenv("TMPDIR") or "/tmp" end

--- A new private folder under `base` (default $TMPDIR or /tmp), owned by its handle and removed
-- however the run ends (SIGINT and SIGTERM included). Its name carries its maker's pid and
-- start time (process.owned_name), so gc can tell a leftover from one in use.
function fs.tempdir(prefix, base)
  local name = require("moonbox.process").owned_name((prefix or "moonbox-"):gsub("%-$", ""))
  local path, err = sys.mkdtemp((base or fs.tmp_base()) .. "/" .. name)
  if not path then errors.raise("fs.tempdir: " .. err, { op = "mkdtemp" }, 2) end
  local d = setmetatable({ path = path, owner = sys.getpid() }, TempDir)
  d.token = cleanup.add(function() d:remove() end, "temporary folder " .. path)
  return d
end

function fs.read(path)
  local f, err = io.open(path, "rb")
  if not f then errors.raise("fs.read: " .. err, { op = "open" }, 2) end
  local data = f:read("a")
  f:close()
  return data
end

--- The file's contents, or nil when it does not exist (other failures raise).
function fs.read_if_exists(path)
  if not sys.lstat(path) then return nil end
  return fs.read(path)
end

function fs.write(path, data, mode)
  local f, err = io.open(path, "wb")
  if not f then errors.raise("fs.write: " .. err, { op = "open" }, 2) end
  local ok, werr = f:write(data)
  f:close()
  if not ok then errors.raise("fs.write: " .. path .. ": " .. tostring(werr), { op = "write" }, 2) end
  if mode then errors.check({ op = "chmod" }, sys.chmod(path, mode)) end
  return path
end

--- Writes `path` so that a reader sees the old or the new file, never half of one: a temporary
-- file beside it, then rename. With durable, the file and its folder are fsynced, so the new
-- file survives a crash once this returns (state records, image indexes).
function fs.write_atomic(path, data, durable, mode)
  local tmp = path .. ".tmp" .. sys.getpid()
  local f, msg = sys.open(tmp, { "wronly", "creat", "trunc" }, mode or tonumber("644", 8))
  if not f then errors.raise("write " .. path .. ": " .. msg, { op = "open" }, 2) end
  local n, werr = sys.write(f, data)
  local synced, serr = true, nil
  if n and durable then synced, serr = sys.fsync(f) end
  f:close()
  if n ~= #data or not synced then
    sys.unlink(tmp)
    errors.raise("write " .. path .. ": " .. tostring(werr or serr or "short write"), { op = "write" }, 2)
  end
  local ok, rerr = sys.rename(tmp, path)
  if not ok then
    sys.unlink(tmp)
    errors.raise("write " .. path .. ": " .. rerr, { op = "rename" }, 2)
  end
  if durable then
    local dir = sys.open(path:match("^(.*)/[^/]*$") or ".", { "rdonly", "directory" })
    if dir then sys.fsync(dir) dir:close() end
  end
  return path
end

function fs.exists(path) return sys.lstat(path) ~= nil end

--- mkdir -p that raises.
function fs.mkdir(path, mode)
  errors.check({ op = "mkdir" }, sys.mkdir(path, mode))
  return path
end

return fs
