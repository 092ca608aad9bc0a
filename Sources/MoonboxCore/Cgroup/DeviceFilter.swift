import CMoonbox
import Glibc

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
