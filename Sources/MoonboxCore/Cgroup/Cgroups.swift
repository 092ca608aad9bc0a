import CMoonbox
import Glibc

/// The cgroup functions of moonbox.sys, over whichever backend this host has.

extension Lua {
    /// Runs a cgroup operation: misuse raises, a system failure returns nil, msg, errno.
    func cgroup(_ body: (CgroupBackend) throws(CgroupError) -> Int32) throws -> Int32 {
        do {
            return try body(try Cgroups.backend())
        } catch {
            switch error {
            case .misuse(let message): throw LuaError(message)
            case .system(let what, let e): return fail(what, errno: e)
            }
        }
    }
}

extension Args {
    /// A cgroup value: a string, or a number written as an integer.
    func cgroupValue(_ i: Int32, _ name: String) throws -> String {
        if lua.type(i) == LUA_TNUMBER, let n = lua.integer(at: i) { return String(n) }
        return try string(i, name)
    }
}

let cgroupFunctions: [(String, LuaFunction)] = [
    ("cgroup_version", { lua in
        try lua.cgroup { b in lua.push(b.version); return 1 }
    }),
    ("cgroup_set", { lua in
        let a = Args(lua, "cgroup_set")
        let group = try a.string(1, "group"), key = try a.string(2, "key")
        let value = try a.cgroupValue(3, "value")
        return try lua.cgroup { b throws(CgroupError) in
            do throws(CgroupError) { try b.set(group, key, value) } catch { throw error.prefixed("cgroup_set") }
            return lua.ok()
        }
    }),
    ("cgroup_get", { lua in
        let a = Args(lua, "cgroup_get")
        let group = try a.string(1, "group"), key = try a.string(2, "key")
        return try lua.cgroup { b throws(CgroupError) in
            do throws(CgroupError) { lua.push(try b.get(group, key)) } catch { throw error.prefixed("cgroup_get") }
            return 1
        }
    }),
    ("cgroup_attach", { lua in
        let a = Args(lua, "cgroup_attach")
        let group = try a.string(1, "group"), pid = try a.integer(2, "pid")
        return try lua.cgroup { b throws(CgroupError) in
            do throws(CgroupError) { try b.attach(group, pid) } catch { throw error.prefixed("cgroup_attach") }
            return lua.ok()
        }
    }),
    ("cgroup_procs", { lua in
        let group = try Args(lua, "cgroup_procs").string(1, "group")
        return try lua.cgroup { b throws(CgroupError) in
            let pids: [Int]
            do throws(CgroupError) { pids = try b.procs(group) } catch { throw error.prefixed("cgroup_procs") }
            lua.newTable(array: Int32(pids.count))
            for (i, p) in pids.enumerated() { lua.append(i + 1) { lua.push(p) } }
            return 1
        }
    }),
    ("cgroup_remove", { lua in
        let group = try Args(lua, "cgroup_remove").string(1, "group")
        return try lua.cgroup { b throws(CgroupError) in
            do throws(CgroupError) { try b.remove(group) } catch { throw error.prefixed("cgroup_remove") }
            return lua.ok()
        }
    }),
    // cgroup_apply(group, {key = value, ...}): creates the group (once) and writes every key, in
    // one call. A value is a string, an integer, or a list of strings written one by one
    // (v1 "devices.allow" rules). memory.max is written before memory.swap.max.
    ("cgroup_apply", { lua in
        let a = Args(lua, "cgroup_apply")
        let group = try a.string(1, "group")
        try a.table(2, "values")
        var values: [(key: String, values: [String])] = []
        try lua.forEachKey(2) { key in
            guard let key else { throw a.error(2, "values", "keys must be cgroup key names") }
            lua.rawGet(2, key)
            defer { lua.pop() }
            if lua.type(-1) == LUA_TTABLE {
                values.append((key, try a.stringList(lua.top, key)))
            } else {
                values.append((key, [try a.cgroupValue(lua.top, key)]))
            }
        }
        return try lua.cgroup { b throws(CgroupError) in
            do throws(CgroupError) { try b.apply(group, values) } catch { throw error.prefixed("cgroup_apply") }
            return lua.ok()
        }
    }),
    // cgroup_destroy(group or folders): kills every process in the group and removes its
    // folders, waiting while the kernel reaps them; then moonbox's parent folder when empty.
    // A list of absolute folders (as cgroup_path gave them, from a record) works too, so a
    // gc run from any cgroup removes exactly what was made; folders off cgroupfs are refused.
    ("cgroup_destroy", { lua in
        let a = Args(lua, "cgroup_destroy")
        if lua.type(1) == LUA_TTABLE {
            let folders = try a.stringList(1, "folders")
            if let (what, e) = destroyCgroupFolders(folders) { return lua.fail(what, errno: e) }
            return lua.ok()
        }
        let group = try a.string(1, "group")
        return try lua.cgroup { b throws(CgroupError) in
            do throws(CgroupError) { try b.destroy(group) } catch { throw error.prefixed("cgroup_destroy") }
            return lua.ok()
        }
    }),
    // cgroup_path(group): the group's folders, one per hierarchy moonbox uses (one on v2),
    // whether made yet or not: what a record must name before the group is made.
    ("cgroup_path", { lua in
        let group = try Args(lua, "cgroup_path").string(1, "group")
        return try lua.cgroup { b in
            lua.push(list: b.directories(group))
            return 1
        }
    }),
]

extension CgroupError {
    /// Misuse messages name the function, the way Args errors do.
    func prefixed(_ function: String) -> CgroupError {
        if case .misuse(let m) = self, !m.hasPrefix(function) { return .misuse("\(function): \(m)") }
        return self
    }
}

