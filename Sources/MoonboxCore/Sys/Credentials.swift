import CMoonbox
import Glibc

/// Credentials: user and group ids, supplementary groups and capabilities.

let capabilityNumbers: [String: Int32] = [
    "chown": 0, "dac_override": 1, "dac_read_search": 2, "fowner": 3, "fsetid": 4, "kill": 5,
    "setgid": 6, "setuid": 7, "setpcap": 8, "linux_immutable": 9, "net_bind_service": 10,
    "net_broadcast": 11, "net_admin": 12, "net_raw": 13, "ipc_lock": 14, "ipc_owner": 15,
    "sys_module": 16, "sys_rawio": 17, "sys_chroot": 18, "sys_ptrace": 19, "sys_pacct": 20,
    "sys_admin": 21, "sys_boot": 22, "sys_nice": 23, "sys_resource": 24, "sys_time": 25,
    "sys_tty_config": 26, "mknod": 27, "lease": 28, "audit_write": 29, "audit_control": 30,
    "setfcap": 31, "mac_override": 32, "mac_admin": 33, "syslog": 34, "wake_alarm": 35,
    "block_suspend": 36, "audit_read": 37, "perfmon": 38, "bpf": 39, "checkpoint_restore": 40,
]

extension Args {
    /// A capability as a name ("sys_admin", "CAP_SYS_ADMIN") or a number.
    func capability(_ i: Int32, _ name: String) throws -> Int32 {
        if lua.type(i) == LUA_TNUMBER {
            let n = try integer(i, name)
            guard n >= 0, n < 64 else { throw error(i, name, "capability \(n) out of range") }
            return Int32(n)
        }
        return try capabilityNumber(try string(i, name), i, name)
    }

    func capabilityNumber(_ raw: String, _ i: Int32, _ name: String) throws -> Int32 {
        var s = raw.lowercased()
        if s.hasPrefix("cap_") { s.removeFirst(4) }
        guard let n = capabilityNumbers[s] else { throw error(i, name, "unknown capability '\(raw)'") }
        return n
    }

    /// uid or gid: a non-negative integer.
    func id(_ i: Int32, _ name: String) throws -> UInt32 {
        let n = try integer(i, name)
        guard n >= 0, n < Int(UInt32.max) else { throw error(i, name, "id \(n) out of range") }
        return UInt32(n)
    }
}

let credentialFunctions: [(String, LuaFunction)] = [
    ("setuid", { lua in
        let id = try Args(lua, "setuid").id(1, "uid")
        return Glibc.setuid(id) == 0 ? lua.ok() : lua.fail("setuid(\(id))")
    }),
    ("setgid", { lua in
        let id = try Args(lua, "setgid").id(1, "gid")
        return Glibc.setgid(id) == 0 ? lua.ok() : lua.fail("setgid(\(id))")
    }),
    ("setgroups", { lua in
        let a = Args(lua, "setgroups")
        try a.table(1, "groups")
        var groups: [gid_t] = []
        for k in 0..<lua.rawLength(1) {
            lua.rawGet(1, k + 1)
            defer { lua.pop() }
            groups.append(try a.id(lua.top, "groups[\(k + 1)]"))
        }
        return Glibc.setgroups(groups.count, groups) == 0 ? lua.ok() : lua.fail("setgroups(\(groups.count) groups)")
    }),
    // capget([pid]): {effective={...}, permitted={...}, inheritable={...}} as capability names.
    ("capget", { lua in
        let pid = lua.isNoneOrNil(1) ? 0 : try Args(lua, "capget").int32(1, "pid")
        var sets = [UInt32](repeating: 0, count: 6)
        if mb_capget_all(Int32(pid), &sets) != 0 { return lua.fail("capget(\(pid))") }
        let names = capabilityNumbers.sorted { $0.value < $1.value }
        lua.newTable()
        for (k, key) in ["effective", "permitted", "inheritable"].enumerated() {
            let bits = UInt64(sets[2 * k]) | UInt64(sets[2 * k + 1]) << 32
            lua.set(key) { lua.push(list: names.filter { bits & (1 << UInt64($0.value)) != 0 }.map(\.key)) }
        }
        return 1
    }),
    // capset{effective=, permitted=, inheritable=}: each a list of capability names.
    ("capset", { lua in
        let a = Args(lua, "capset")
        try a.table(1, "sets")
        try a.options(1, "sets", allowed: ["effective", "permitted", "inheritable"])
        var sets = [UInt32](repeating: 0, count: 6)
        for (k, key) in ["effective", "permitted", "inheritable"].enumerated() {
            let names: [String] = try a.field(1, key) { try Args(lua, "capset").stringList($0, key) } ?? []
            var bits: UInt64 = 0
            for n in names { bits |= 1 << UInt64(try a.capabilityNumber(n, 1, key)) }
            sets[2 * k] = UInt32(truncatingIfNeeded: bits)
            sets[2 * k + 1] = UInt32(truncatingIfNeeded: bits >> 32)
        }
        return mb_capset_all(sets) == 0 ? lua.ok() : lua.fail("capset()")
    }),
]
