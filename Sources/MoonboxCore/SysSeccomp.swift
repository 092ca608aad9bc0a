import CMoonbox
import Glibc

/// seccomp(2) filters built with libseccomp from a profile in the docker/OCI format:
///   {defaultAction = "SCMP_ACT_ERRNO", defaultErrnoRet = 1,
///    syscalls = {{names = {...}, action = "SCMP_ACT_ALLOW", errnoRet = 1,
///                 args = {{index = 0, value = 0, valueTwo = 0, op = "SCMP_CMP_EQ"}}}}}
/// Conditions on capabilities or architectures (includes/excludes) are the caller's policy.

private let comparisons: [String: scmp_compare] = [
    "SCMP_CMP_NE": SCMP_CMP_NE, "SCMP_CMP_LT": SCMP_CMP_LT, "SCMP_CMP_LE": SCMP_CMP_LE,
    "SCMP_CMP_EQ": SCMP_CMP_EQ, "SCMP_CMP_GE": SCMP_CMP_GE, "SCMP_CMP_GT": SCMP_CMP_GT,
    "SCMP_CMP_MASKED_EQ": SCMP_CMP_MASKED_EQ,
]

private func action(_ name: String, errnoRet: Int?) -> UInt32? {
    switch name {
    case "SCMP_ACT_ALLOW": return 0x7fff_0000
    case "SCMP_ACT_ERRNO": return mb_SCMP_ACT_ERRNO(UInt32(errnoRet ?? Int(EPERM)))
    case "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD": return 0
    case "SCMP_ACT_KILL_PROCESS": return 0x8000_0000
    case "SCMP_ACT_TRAP": return 0x0003_0000
    case "SCMP_ACT_LOG": return 0x7ffc_0000
    default: return nil
    }
}

/// Reads one rule's argument comparisons.
private func readArgs(_ a: Args, _ lua: Lua, _ t: Int32, rule: Int) throws -> [scmp_arg_cmp] {
    guard lua.type(t) == LUA_TTABLE else { return [] }
    var out: [scmp_arg_cmp] = []
    for k in 0..<lua.rawLength(t) {
        lua.rawGet(t, k + 1)
        defer { lua.pop() }
        let e = lua.top
        let label = "syscalls[\(rule)].args[\(k + 1)]"
        guard lua.type(e) == LUA_TTABLE else { throw a.error(1, label, "table expected") }
        func num(_ key: String) throws -> UInt64 {
            lua.rawGet(e, key)
            defer { lua.pop() }
            if lua.isNoneOrNil(-1) { return 0 }
            guard let n = lua.integer(at: -1) else { throw a.error(1, label, "\(key) must be an integer") }
            return UInt64(bitPattern: Int64(n))
        }
        let index = try num("index")
        guard index < 6 else { throw a.error(1, label, "index must be 0 to 5") }
        lua.rawGet(e, "op")
        let opName = lua.string(at: -1) ?? ""
        lua.pop()
        guard let op = comparisons[opName] else { throw a.error(1, label, "unknown op '\(opName)'") }
        out.append(scmp_arg_cmp(arg: UInt32(index), op: op, datum_a: try num("value"), datum_b: try num("valueTwo")))
    }
    return out
}

let seccompFunctions: [(String, LuaFunction)] = [
    // seccomp_load(profile): builds the filter with libseccomp and loads it into this process.
    // Returns the number of rules added; syscalls this libseccomp does not know are skipped.
    ("seccomp_load", { lua in
        let a = Args(lua, "seccomp_load")
        try a.table(1, "profile")
        let defaultName = try a.stringField(1, "defaultAction") ?? "SCMP_ACT_ERRNO"
        let defaultErrno = try a.integerField(1, "defaultErrnoRet")
        guard let defaultAction = action(defaultName, errnoRet: defaultErrno) else {
            throw a.error(1, "defaultAction", "unknown action '\(defaultName)'")
        }
        // Read the rules first, keeping the Lua stack balanced; then build the filter.
        var rules: [(action: UInt32, names: [String], args: [scmp_arg_cmp])] = []
        lua.rawGet(1, "syscalls")
        let list = lua.top
        if lua.type(list) == LUA_TTABLE {
            for r in 0..<lua.rawLength(list) {
                lua.rawGet(list, r + 1)
                defer { lua.pop() }
                let rule = lua.top
                guard lua.type(rule) == LUA_TTABLE else { throw a.error(1, "syscalls[\(r + 1)]", "table expected") }
                let actionName = try a.stringField(rule, "action") ?? ""
                let errnoRet = try a.integerField(rule, "errnoRet")
                guard let act = action(actionName, errnoRet: errnoRet) else {
                    throw a.error(1, "syscalls[\(r + 1)].action", "unknown action '\(actionName)'")
                }
                lua.rawGet(rule, "args")
                let args = try readArgs(a, lua, lua.top, rule: r + 1)
                lua.pop()
                let names: [String] = try a.field(rule, "names") { try Args(lua, "seccomp_load").stringList($0, "syscalls[\(r + 1)].names") } ?? []
                rules.append((act, names, args))
            }
        }
        lua.setTop(list - 1)
        guard let ctx = seccomp_init(defaultAction) else { return lua.fail("seccomp_init()", errno: ENOMEM) }
        defer { seccomp_release(ctx) }
        var added = 0
        for rule in rules where rule.action != defaultAction {  // libseccomp refuses rules that repeat the default
            for name in rule.names {
                let nr = seccomp_syscall_resolve_name(name)
                if nr == __NR_SCMP_ERROR { continue }  // not a syscall on this architecture
                let rc = rule.args.withUnsafeBufferPointer { seccomp_rule_add_array(ctx, rule.action, nr, UInt32($0.count), $0.baseAddress) }
                if rc == -EEXIST { continue }
                if rc < 0 { return lua.fail("seccomp_rule_add(\(name))", errno: -rc) }
                added += 1
            }
        }
        let rc = seccomp_load(ctx)
        if rc < 0 { return lua.fail("seccomp_load()", errno: -rc) }
        lua.push(added)
        return 1
    }),
]
