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

/// Builds a libseccomp filter from the profile at stack index 1. On success the caller
/// owns the returned context; a failure has already been pushed as nil, msg, errno.
private func buildFilter(_ lua: Lua, _ fname: String) throws -> (ctx: scmp_filter_ctx?, rules: Int, failed: Int32?) {
    let a = Args(lua, fname)
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
            let names: [String] = try a.field(rule, "names") { try Args(lua, fname).stringList($0, "syscalls[\(r + 1)].names") } ?? []
            rules.append((act, names, args))
        }
    }
    lua.setTop(list - 1)
    guard let ctx = seccomp_init(defaultAction) else { return (nil, 0, lua.fail("seccomp_init()", errno: ENOMEM)) }
    var added = 0
    for rule in rules where rule.action != defaultAction {  // libseccomp refuses rules that repeat the default
        for name in rule.names {
            let nr = seccomp_syscall_resolve_name(name)
            if nr == __NR_SCMP_ERROR { continue }  // not a syscall on this architecture
            let rc = rule.args.withUnsafeBufferPointer { seccomp_rule_add_array(ctx, rule.action, nr, UInt32($0.count), $0.baseAddress) }
            if rc == -EEXIST { continue }
            if rc < 0 {
                seccomp_release(ctx)
                return (nil, 0, lua.fail("seccomp_rule_add(\(name))", errno: -rc))
            }
            added += 1
        }
    }
    return (ctx, added, nil)
}

let seccompFunctions: [(String, LuaFunction)] = [
    // seccomp_compile(profile): the filter as a compiled BPF program (a string), built once
    // and then loaded cheaply in every child with seccomp_load.
    ("seccomp_compile", { lua in
        let (ctx, _, failed) = try buildFilter(lua, "seccomp_compile")
        if let failed { return failed }
        defer { seccomp_release(ctx) }
        let fd = mb_memfd_create("moonbox-seccomp")
        if fd < 0 { return lua.fail("memfd_create()") }
        defer { Glibc.close(fd) }
        let rc = seccomp_export_bpf(ctx, fd)
        if rc < 0 { return lua.fail("seccomp_export_bpf()", errno: -rc) }
        let size = Int(lseek(fd, 0, SEEK_END))
        var buffer = [UInt8](repeating: 0, count: max(size, 1))
        if size <= 0 || pread(fd, &buffer, size, 0) != size { return lua.fail("seccomp_export_bpf()", errno: EIO) }
        buffer.withUnsafeBytes { lua.push(bytes: UnsafeRawBufferPointer(rebasing: $0[0..<size])) }
        return 1
    }),
    // seccomp_load(profile or program [, {no_new_privs = true}]): loads a filter into this
    // process. no_new_privs is set first unless asked otherwise (then the kernel wants
    // CAP_SYS_ADMIN). A profile table is built here; a string from seccomp_compile is loaded as
    // it is. Returns the number of rules, or true for a compiled program.
    ("seccomp_load", { lua in
        let a = Args(lua, "seccomp_load")
        var nnp = true
        if try a.optTable(2, "options") {
            try a.options(2, "options", allowed: ["no_new_privs"])
            nnp = try a.boolField(2, "no_new_privs") ?? true
        }
        if lua.type(1) == LUA_TSTRING {
            let rc = lua.withBytes(at: 1) { mb_seccomp_load_bpf($0.baseAddress, $0.count, nnp ? 1 : 0) } ?? -1
            return rc == 0 ? lua.ok() : lua.fail("seccomp_load(program)")
        }
        guard nnp else { throw a.error(2, "no_new_privs", "a profile table is loaded by libseccomp, which always sets it; compile it first") }
        lua.setTop(1)
        let (ctx, added, failed) = try buildFilter(lua, "seccomp_load")
        if let failed { return failed }
        defer { seccomp_release(ctx) }
        let rc = seccomp_load(ctx)
        if rc < 0 { return lua.fail("seccomp_load()", errno: -rc) }
        lua.push(added)
        return 1
    }),
]
