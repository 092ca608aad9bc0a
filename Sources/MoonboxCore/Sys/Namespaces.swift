import CMoonbox
import Glibc

/// Namespaces: unshare(2), clone(2), setns(2), the UTS hostname and user-namespace id maps.

let namespaceFlags: [String: Int32] = [
    "mount": 0x0002_0000, "uts": 0x0400_0000, "ipc": 0x0800_0000, "net": 0x4000_0000,
    "pid": 0x2000_0000, "user": 0x1000_0000, "cgroup": 0x0200_0000, "time": 0x0000_0080,
]

let namespaceFunctions: [(String, LuaFunction)] = [
    ("unshare", { lua in
        let a = Args(lua, "unshare")
        let flags = try a.flags(1, "namespaces", namespaceFlags)
        return mb_unshare(flags) == 0 ? lua.ok() : lua.fail("unshare(\(try a.stringList(1, "namespaces").joined(separator: ",")))")
    }),
    ("clone", { lua in
        let a = Args(lua, "clone")
        let names = try a.optStringList(1, "namespaces")
        if names.contains("time") {
            throw a.error(1, "namespaces", "'time' cannot be entered by clone; use unshare{\"time\"} and then fork")
        }
        let flags = try a.flags(1, "namespaces", namespaceFlags)
        let pid = mb_clone(UInt(UInt32(bitPattern: flags)))
        if pid < 0 { return lua.fail("clone(\(names.joined(separator: ",")))") }
        lua.push(Int(pid))
        return 1
    }),
    ("setns", { lua in
        let a = Args(lua, "setns")
        // A namespace file's path, or an open fd of one (to come back to a saved namespace).
        let heldFd: Int32? = lua.type(1) == LUA_TSTRING ? nil : try a.fd(1, "path")
        let path = try heldFd.map { "fd \($0)" } ?? a.string(1, "path")
        let kind = try a.optString(2, "kind")
        var nstype: Int32 = 0
        if let kind {
            guard let f = namespaceFlags[kind] else {
                throw a.error(2, "kind", "unknown namespace '\(kind)'; known: \(namespaceFlags.keys.sorted().joined(separator: ", "))")
            }
            nstype = f
        }
        if let heldFd { return mb_setns(heldFd, nstype) == 0 ? lua.ok() : lua.fail("setns(\(path))") }
        let fd = mb_open(path, O_RDONLY | O_CLOEXEC, 0)
        if fd < 0 { return lua.fail("setns(\(path))") }
        defer { Glibc.close(fd) }
        return mb_setns(fd, nstype) == 0 ? lua.ok() : lua.fail("setns(\(path))")
    }),
    ("sethostname", { lua in
        let name = try Args(lua, "sethostname").string(1, "name")
        return mb_sethostname(name, name.utf8.count) == 0 ? lua.ok() : lua.fail("sethostname(\(name))")
    }),
    ("gethostname", { lua in
        var buf = [CChar](repeating: 0, count: 256)
        if Glibc.gethostname(&buf, 255) != 0 { return lua.fail("gethostname()") }
        lua.push(String(cString: buf))
        return 1
    }),
    // id_map(pid, {uid={{inside, outside, count}, ...}, gid={...}, setgroups="deny"|"allow"}):
    // writes a child's user namespace maps. setgroups is denied unless asked otherwise.
    ("id_map", { lua in
        let a = Args(lua, "id_map")
        let pid = try a.int32(1, "pid")
        try a.table(2, "maps")
        try a.options(2, "maps", allowed: ["uid", "gid", "setgroups"])
        func readMap(_ key: String) throws -> String? {
            try a.field(2, key) { t in
                guard lua.type(t) == LUA_TTABLE else { throw a.error(2, key, "list of {inside, outside, count} expected") }
                var lines: [String] = []
                for k in 0..<lua.rawLength(t) {
                    lua.rawGet(t, k + 1)
                    defer { lua.pop() }
                    let e = lua.top
                    guard lua.type(e) == LUA_TTABLE, lua.rawLength(e) == 3 else {
                        throw a.error(2, key, "entry \(k + 1) must be {inside, outside, count}")
                    }
                    var nums: [Int] = []
                    for j in 1...3 {
                        lua.rawGet(e, j)
                        defer { lua.pop() }
                        guard let n = lua.integer(at: -1), n >= 0, n <= Int(UInt32.max) else {
                            throw a.error(2, key, "entry \(k + 1) must hold three non-negative integers")
                        }
                        nums.append(n)
                    }
                    lines.append("\(nums[0]) \(nums[1]) \(nums[2])")
                }
                return lines.joined(separator: "\n") + "\n"
            }
        }
        let uid = try readMap("uid"), gid = try readMap("gid")
        let setgroups = try a.stringField(2, "setgroups") ?? "deny"
        guard setgroups == "deny" || setgroups == "allow" else { throw a.error(2, "setgroups", "must be 'deny' or 'allow'") }
        if gid != nil, let e = writeProcFile("/proc/\(pid)/setgroups", setgroups) {
            return lua.fail("id_map(\(pid), setgroups)", errno: e)
        }
        if let uid, let e = writeProcFile("/proc/\(pid)/uid_map", uid) { return lua.fail("id_map(\(pid), uid_map)", errno: e) }
        if let gid, let e = writeProcFile("/proc/\(pid)/gid_map", gid) { return lua.fail("id_map(\(pid), gid_map)", errno: e) }
        return lua.ok()
    }),
]
