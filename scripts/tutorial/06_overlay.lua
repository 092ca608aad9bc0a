-- Tutorial, "Overlay filesystem": three lowers and an upper. new_file lands in the
-- upper, deleting file3 leaves a whiteout there, and the lowers stay untouched.
local sys = require "moonbox.sys"
local process = require "moonbox.process"
local fs = require "moonbox.fs"

local dir <close> = fs.tempdir("tutorial-overlay-")
local o = dir.path .. "/overlay"
for _, d in ipairs({ "mount", "layer1", "layer2", "layer3", "layer4" }) do assert(sys.mkdir(o .. "/" .. d)) end
assert(sys.mkdir(dir.path .. "/workdir"))
for i = 1, 3 do fs.write(string.format("%s/layer%d/file%d", o, i, i), "layer" .. i .. " file\n") end

local function tree(path, prefix, out)
  for _, name in ipairs(assert(sys.listdir(path))) do
    local st = assert(sys.lstat(path .. "/" .. name))
    local kind = st.type == "char" and string.format(" (char %d/%d: whiteout)", st.major, st.minor) or ""
    out[#out + 1] = prefix .. name .. kind
    if st.type == "dir" then tree(path .. "/" .. name, prefix .. "  ", out) end
  end
  return out
end

local seen = process.call(function()
  assert(sys.mount(nil, "/", nil, { "rprivate" }))
  assert(sys.overlay({
    lower = { o .. "/layer1", o .. "/layer2", o .. "/layer3" },
    upper = o .. "/layer4", work = dir.path .. "/workdir", target = o .. "/mount",
  }))
  local merged_before = sys.listdir(o .. "/mount")
  local file2 = fs.read(o .. "/mount/file2")
  fs.write(o .. "/mount/new_file", "new file\n")
  assert(sys.unlink(o .. "/mount/file3"))
  return { before = merged_before, file2 = file2, after = sys.listdir(o .. "/mount") }
end, { namespaces = { "mount" } })

print("merged view:            " .. table.concat(seen.before, " "))
print("cat mount/file2:        " .. seen.file2:gsub("\n", ""))
print("after new_file, rm file3: " .. table.concat(seen.after, " "))
print("tree overlay (the lowers are untouched; layer4 is the upper):")
print(table.concat(tree(o, "  ", {}), "\n"))
