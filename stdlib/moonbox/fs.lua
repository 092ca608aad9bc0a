-- moonbox.fs: file helpers over moonbox.sys and io, and temporary folders that clean up.
--   local dir <close> = fs.tempdir("demo-")   -- removed (never across mounts) when it goes
local sys = require "moonbox.sys"

local fs = {}

local TempDir = { __name = "moonbox.tempdir" }
TempDir.__index = TempDir
TempDir.__tostring = function(d) return "tempdir(" .. d.path .. ")" end

--- Removes the folder now; later calls do nothing.
function TempDir:remove()
  if self.path and not self.removed and self.owner == sys.getpid() then
    self.removed = true
    local ok, err = sys.remove_tree(self.path)
    if not ok then error("tempdir: " .. err, 2) end
  end
end
TempDir.__close = function(d) d:remove() end
-- Only the process that made it removes it: a forked child's copy of the handle must not.
TempDir.__gc = function(d)
  if not d.removed and d.owner == sys.getpid() then pcall(sys.remove_tree, d.path) end
end

--- A new folder under $TMPDIR (or /tmp), owned by its handle.
function fs.tempdir(prefix)
  local base = os.getenv("TMPDIR") or "/tmp"
  local path, err = sys.mkdtemp(base .. "/" .. (prefix or "moonbox-"))
  if not path then error("fs.tempdir: " .. err, 2) end
  return setmetatable({ path = path, owner = sys.getpid() }, TempDir)
end

function fs.read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data = f:read("a")
  f:close()
  return data
end

function fs.write(path, data, mode)
  local f, err = io.open(path, "wb")
  if not f then error("fs.write: " .. err, 2) end
  f:write(data)
  f:close()
  if mode then assert(sys.chmod(path, mode)) end
  return path
end

function fs.exists(path) return sys.lstat(path) ~= nil end

return fs
