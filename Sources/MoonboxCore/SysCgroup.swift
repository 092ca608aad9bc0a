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
    // cgroup_path(group): the group's folders, one per hierarchy (one on v2).
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

// MARK: cgroup v2 device filters (eBPF)

/// One eBPF instruction: opcode, registers, offset, immediate.
private func insn(_ code: UInt8, dst: UInt8 = 0, src: UInt8 = 0, off: Int16 = 0, imm: Int32 = 0) -> [UInt8] {
    let o = UInt16(bitPattern: off), i = UInt32(bitPattern: imm)
    return [code, dst | (src << 4), UInt8(o & 0xff), UInt8(o >> 8),
            UInt8(i & 0xff), UInt8((i >> 8) & 0xff), UInt8((i >> 16) & 0xff), UInt8(i >> 24)]
}

private let LDX_W: UInt8 = 0x61, ALU32_AND_K: UInt8 = 0x54, ALU32_RSH_K: UInt8 = 0x74
private let MOV64_X: UInt8 = 0xbf, MOV64_K: UInt8 = 0xb7, JNE_K: UInt8 = 0x55, EXIT: UInt8 = 0x95

/// The device-filter program for `rules`: allow what a rule matches, deny the rest, as the
/// v1 devices cgroup's "a" deny plus allow lines would. A rule is (type: 0 any, 1 block,
/// 2 char; major, minor: -1 any; access bits: 1 mknod, 2 read, 4 write).
func deviceFilterProgram(_ rules: [(type: Int32, major: Int32, minor: Int32, access: Int32)]) -> [UInt8] {
    // r2 = device type, r3 = access, r4 = major, r5 = minor (struct bpf_cgroup_dev_ctx)
    var prog = insn(LDX_W, dst: 2, src: 1, off: 0) + insn(ALU32_AND_K, dst: 2, imm: 0xffff)
        + insn(LDX_W, dst: 3, src: 1, off: 0) + insn(ALU32_RSH_K, dst: 3, imm: 16)
        + insn(LDX_W, dst: 4, src: 1, off: 4) + insn(LDX_W, dst: 5, src: 1, off: 8)
    for r in rules {
        // Each test jumps to the next rule when it fails; the block ends with "allow".
        var tests: [(code: UInt8, dst: UInt8, src: UInt8, imm: Int32, isJump: Bool)] = []
        if r.type != 0 { tests.append((JNE_K, 2, 0, r.type, true)) }
        if r.access != 7 {
            tests.append((MOV64_X, 1, 3, 0, false))
            tests.append((ALU32_AND_K, 1, 0, ~r.access & 0xffff, false))
            tests.append((JNE_K, 1, 0, 0, true))
        }
        if r.major >= 0 { tests.append((JNE_K, 4, 0, r.major, true)) }
        if r.minor >= 0 { tests.append((JNE_K, 5, 0, r.minor, true)) }
        let length = tests.count + 2
        for (i, t) in tests.enumerated() {
            prog += insn(t.code, dst: t.dst, src: t.src, off: t.isJump ? Int16(length - 1 - i) : 0, imm: t.imm)
        }
        prog += insn(MOV64_K, dst: 0, imm: 1) + insn(EXIT)
    }
    return prog + insn(MOV64_K, dst: 0, imm: 0) + insn(EXIT)
}

let deviceFilterFunctions: [(String, LuaFunction)] = [
    // bpf_device_filter(folder, rules): on cgroup v2, allows only the devices `rules` name to the
    // cgroup at `folder`, through an eBPF program. Rules are v1-style lines: "c 1:3 rwm", "c 136:* rwm".
    ("bpf_device_filter", { lua in
        let a = Args(lua, "bpf_device_filter")
        let folder = try a.string(1, "folder")
        let lines = try a.stringList(2, "rules")
        var rules: [(type: Int32, major: Int32, minor: Int32, access: Int32)] = []
        for line in lines {
            let f = line.split(separator: " ").map(String.init)
            let nums = f.count > 1 ? f[1].split(separator: ":").map(String.init) : []
            guard f.count == 3, ["a", "b", "c"].contains(f[0]), nums.count == 2,
                  let access = Optional(f[2].reduce(Int32(0)) { $0 | ($1 == "m" ? 1 : $1 == "r" ? 2 : $1 == "w" ? 4 : 64) }),
                  access > 0, access < 8 else {
                throw a.error(2, "rules", "bad rule '\(line)' (like \"c 1:3 rwm\" or \"c 136:* rw\")")
            }
            func number(_ s: String) -> Int32? { s == "*" ? -1 : Int32(s).flatMap { $0 >= 0 ? $0 : nil } }
            guard let major = number(nums[0]), let minor = number(nums[1]) else {
                throw a.error(2, "rules", "bad device numbers in '\(line)'")
            }
            rules.append((f[0] == "a" ? 0 : f[0] == "b" ? 1 : 2, major, minor, access))
        }
        let program = deviceFilterProgram(rules)
        let fd = mb_open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        if fd < 0 { return lua.fail("bpf_device_filter(\(folder))") }
        defer { Glibc.close(fd) }
        var log = [CChar](repeating: 0, count: 4096)
        let r = program.withUnsafeBytes { mb_bpf_device_filter(fd, $0.baseAddress, Int32(program.count / 8), &log, log.count) }
        if r != 0 {
            let e = errno
            let why = String(cString: log)
            return lua.fail(message: "bpf_device_filter(\(folder)): \(errnoText(e))" + (why.isEmpty ? "" : " (\(why))"), errnoName: errnoName(e))
        }
        return lua.ok()
    }),
]
