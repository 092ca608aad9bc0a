import CMoonbox
import Glibc

/// Resource limits: setrlimit(2) and getrlimit(2) by name.

let rlimitResources: [String: Int32] = [
    "cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "rss": 5, "nproc": 6, "nofile": 7,
    "memlock": 8, "as": 9, "locks": 10, "sigpending": 11, "msgqueue": 12, "nice": 13, "rtprio": 14,
    "rttime": 15,
]


let rlimitFunctions: [(String, LuaFunction)] = [
    ("setrlimit", { lua in
        let a = Args(lua, "setrlimit")
        let name = try a.string(1, "resource")
        guard let resource = rlimitResources[name] else {
            throw a.error(1, "resource", "unknown resource '\(name)'; known: \(rlimitResources.keys.sorted().joined(separator: ", "))")
        }
        func limit(_ i: Int32, _ label: String) throws -> rlim_t {
            if lua.type(i) == LUA_TSTRING, try a.string(i, label) == "unlimited" { return rlim_t(bitPattern: -1) }
            let n = try a.integer(i, label)
            guard n >= 0 else { throw a.error(i, label, "must be >= 0 or \"unlimited\"") }
            return rlim_t(n)
        }
        let soft = try limit(2, "soft")
        let hard = lua.isNoneOrNil(3) ? soft : try limit(3, "hard")
        var rl = rlimit(rlim_cur: soft, rlim_max: hard)
        return setrlimit(__rlimit_resource_t(UInt32(resource)), &rl) == 0 ? lua.ok() : lua.fail("setrlimit(\(name))")
    }),
    ("getrlimit", { lua in
        let a = Args(lua, "getrlimit")
        let name = try a.string(1, "resource")
        guard let resource = rlimitResources[name] else { throw a.error(1, "resource", "unknown resource '\(name)'") }
        var rl = rlimit()
        if getrlimit(__rlimit_resource_t(UInt32(resource)), &rl) != 0 { return lua.fail("getrlimit(\(name))") }
        for v in [rl.rlim_cur, rl.rlim_max] {
            if v == rlim_t(bitPattern: -1) { lua.push("unlimited") } else { lua.push(Int(v)) }
        }
        return 2
    }),
]
