import CMoonbox
import Foundation
import XCTest
@testable import MoonboxCore

/// The Lua bridge, in process: values both ways, errors through nested pcall,
/// tracebacks, and no leaks when calls fail. Nothing here forks: this process has threads.
final class BridgeTests: XCTestCase {
    /// Runs `chunk` and returns its first result as a string, or the error.
    private func eval(_ runtime: Runtime, _ chunk: String) -> (value: String?, error: String?) {
        if let e = runtime.load(string: chunk, chunkname: "=test") { return (nil, e) }
        let base = runtime.lua.top - 1
        if let e = runtime.call(arguments: [], results: 1) { return (nil, e) }
        defer { runtime.lua.setTop(base) }
        return (runtime.lua.string(at: -1) ?? (runtime.lua.isNoneOrNil(-1) ? "nil" : runtime.lua.typeName(-1)), nil)
    }

    func testValuesCrossBothWays() {
        let rt = Runtime()
        let lua = rt.lua
        lua.push(function: { lua in
            let a = Args(lua, "echo")
            let s = try a.string(1, "s")
            let n = try a.integer(2, "n")
            let d = try a.number(3, "d")
            let b = try a.boolean(4, "b")
            let list = try a.stringList(5, "list")
            lua.push(s + "!")
            lua.push(n * 2)
            lua.push(d / 2)
            lua.push(!b)
            lua.push(list: list.reversed())
            return 5
        }, name: "echo")
        lua_setglobal(lua.L, "echo")
        let r = eval(rt, """
            local s, n, d, b, l = echo("hi", 21, 3.0, true, {"a", "b"})
            return table.concat({s, n, d, tostring(b), l[1], l[2], math.type(n)}, ",")
            """)
        XCTAssertNil(r.error)
        XCTAssertEqual(r.value, "hi!,42,1.5,false,b,a,integer")
    }

    func testBinaryStringsSurvive() {
        let rt = Runtime()
        let r = eval(rt, """
            local sys = require "moonbox.sys"
            local r, w = sys.pipe()
            sys.write(w, "a\\0b\\255")
            local got = sys.read(r, 10)
            return #got .. ":" .. got:byte(2) .. ":" .. got:byte(4)
            """)
        XCTAssertEqual(r.value, "4:0:255")
    }

    func testErrorsPassThroughNestedPcall() {
        let rt = Runtime()
        let r = eval(rt, """
            local sys = require "moonbox.sys"
            local ok1, e1 = pcall(function()
              local ok2, e2 = pcall(sys.mount, nil, {})
              assert(not ok2)
              error("outer: " .. e2, 0)
            end)
            return e1
            """)
        XCTAssertNil(r.error)
        XCTAssertEqual(r.value, "outer: mount: bad argument #2 'target' (string or fd expected, got table)")
    }

    func testUncaughtErrorCarriesLocationAndTraceback() {
        let rt = Runtime()
        let r = eval(rt, """
            local function inner() require("moonbox.sys").kill("x") end
            inner()
            """)
        XCTAssertNil(r.value)
        let e = r.error ?? ""
        XCTAssertTrue(e.hasPrefix("test:1: kill: bad argument #1 'pid'"), e)
        XCTAssertTrue(e.contains("stack traceback:"), e)
        XCTAssertTrue(e.contains("in local 'inner'"), e)
    }

    func testFailureConventionIsNilMessageErrno() {
        let rt = Runtime()
        let r = eval(rt, """
            local ok, msg, errno = require("moonbox.sys").stat("/nonexistent/moonbox")
            return tostring(ok) .. "|" .. msg .. "|" .. errno
            """)
        XCTAssertEqual(r.value, "nil|stat(/nonexistent/moonbox): No such file or directory|ENOENT")
    }

    func testFailingCallsLeakNothing() {
        let rt = Runtime()
        func fdCount() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1 }
        _ = eval(rt, "collectgarbage(); collectgarbage()")
        let before = eval(rt, "return collectgarbage('count')").value.flatMap(Double.init) ?? 0
        let fds = fdCount()
        let r = eval(rt, """
            local sys = require "moonbox.sys"
            for i = 1, 20000 do
              pcall(sys.mount, i)
              sys.open("/nonexistent/x", "rdonly")
              pcall(sys.cgroup_get, "/bad", "pids.max")
            end
            collectgarbage(); collectgarbage()
            return collectgarbage('count')
            """)
        XCTAssertNil(r.error)
        let after = r.value.flatMap(Double.init) ?? .infinity
        XCTAssertLessThan(after - before, 64, "Lua heap grew by \(after - before) KiB")
        XCTAssertEqual(fdCount(), fds)
    }

    func testEmbeddedStdlibLoads() {
        let rt = Runtime()
        let r = eval(rt, "return require('moonbox.json').encode({a = {1, 2}})")
        XCTAssertEqual(r.value, #"{"a":[1,2]}"#)
    }

    /// Every module is embedded as bytecode that loads, with its source's name and lines kept.
    func testEveryEmbeddedModuleIsBytecodeThatLoads() {
        XCTAssertEqual(Runtime.decodeBase64("aGVsbG8gd29ybGQ="), Array("hello world".utf8))
        XCTAssertEqual(Runtime.decodeBase64("YQ=="), Array("a".utf8))
        XCTAssertEqual(Runtime.decodeBase64(""), [])
        XCTAssertGreaterThan(embeddedStdlib.count, 30)
        for (name, entry) in embeddedStdlib {
            let chunk = Runtime.decodeBase64(entry.bytecode)
            XCTAssertEqual(Array(chunk.prefix(4)), [0x1b, 0x4c, 0x75, 0x61], name)  // "\x1bLua"
        }
        let rt = Runtime()
        let r = eval(rt, "local ok, e = pcall(require('moonbox.check').integer, 'w', 'n', 'x') return tostring(debug.getinfo(require('moonbox.check').integer, 'S').source)")
        XCTAssertEqual(r.value, "@stdlib/moonbox/check.lua")
    }

    func testSizeParsing() {
        XCTAssertEqual(parseSize("512M"), .bytes(512 << 20))
        XCTAssertEqual(parseSize("1G"), .bytes(1 << 30))
        XCTAssertEqual(parseSize("1gib"), .bytes(1 << 30))
        XCTAssertEqual(parseSize("512MiB"), .bytes(512 << 20))
        XCTAssertEqual(parseSize("100k"), .bytes(100 << 10))
        XCTAssertEqual(parseSize("1.5G"), .bytes(3 << 29))
        XCTAssertEqual(parseSize("4096"), .bytes(4096))
        XCTAssertEqual(parseSize("2b"), .bytes(2))
        XCTAssertEqual(parseSize("max"), .bytes(-1))
        func reason(_ s: String) -> String {
            if case .invalid(let why) = parseSize(s) { return why }
            return "accepted"
        }
        XCTAssertTrue(reason("lots").contains("is not a size"), reason("lots"))
        XCTAssertTrue(reason("-5").contains("negative"), reason("-5"))
        XCTAssertTrue(reason("99999999999999G").contains("too large"), reason("99999999999999G"))
        XCTAssertTrue(reason("inf").contains("is not a size"))
        XCTAssertTrue(reason("nan").contains("is not a size"))
        XCTAssertTrue(reason("1e9").contains("is not a size"))
        XCTAssertTrue(reason("5XiB").contains("unknown unit"), reason("5XiB"))
        XCTAssertTrue(reason("").contains("empty"))
    }
}

/// The v2 backend's translation, on a folder tree standing in for /sys/fs/cgroup.
final class CgroupTreeTests: XCTestCase {
    private var root = ""

    override func setUp() {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("moonbox-cgtree-\(UUID())").path
        try? FileManager.default.createDirectory(atPath: root + "/moonbox/g", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: root + "/cgroup.controllers", contents: Data("cpu memory pids\n".utf8))
        FileManager.default.createFile(atPath: root + "/cgroup.subtree_control", contents: Data())
        for f in ["memory.max", "pids.max", "cpu.max", "cgroup.freeze"] {
            FileManager.default.createFile(atPath: root + "/moonbox/g/" + f, contents: Data("old-old-old\n".utf8))
        }
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: root) }

    private func read(_ f: String) -> String { (try? String(contentsOfFile: root + "/moonbox/g/" + f, encoding: .utf8)) ?? "?" }

    func testV2WritesWholeValues() throws {
        let v2 = CgroupV2(parent: root + "/moonbox")
        try v2.set("g", "memory.max", "256M")
        try v2.set("g", "pids.max", "max")
        try v2.set("g", "cpu.max", "10000 100000")
        XCTAssertEqual(read("memory.max"), "268435456")
        XCTAssertEqual(read("pids.max"), "max")
        XCTAssertEqual(read("cpu.max"), "10000 100000")
        XCTAssertEqual(try v2.get("g", "cpu.max"), "10000 100000")
        let controllers = try String(contentsOfFile: root + "/cgroup.subtree_control", encoding: .utf8)
        XCTAssertTrue(controllers.hasPrefix("+"), controllers)
    }

    func testV2RejectsUnknownKeysAndBadGroups() {
        let v2 = CgroupV2(parent: root + "/moonbox")
        XCTAssertThrowsError(try v2.set("g", "memory.bogus", "1")) { e in
            guard case CgroupError.misuse(let m) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(m, "unknown key 'memory.bogus' for cgroup v2")
        }
        XCTAssertThrowsError(try v2.set("../up", "pids.max", "1"))
        XCTAssertThrowsError(try v2.set("g", "memory.max", "lots"))
    }
}
