import CMoonbox
import Glibc

// MARK: argument checking

/// Reads and checks the arguments of one Swift function. A wrong type, a missing
/// argument or an unknown option raises an error naming the function and the argument.
public struct Args {
    public let lua: Lua
    public let function: String

    public init(_ lua: Lua, _ function: String) {
        self.lua = lua
        self.function = function
    }

    public func error(_ i: Int32, _ name: String, _ problem: String) -> LuaError {
        LuaError("\(function): bad argument #\(i) '\(name)' (\(problem))")
    }

    private func expected(_ i: Int32, _ name: String, _ what: String) -> LuaError {
        let got = lua.type(i) == LUA_TNONE ? "no value" : lua.typeName(i)
        return error(i, name, "\(what) expected, got \(got)")
    }

    public func string(_ i: Int32, _ name: String) throws -> String {
        guard lua.type(i) == LUA_TSTRING, let s = lua.string(at: i) else { throw expected(i, name, "string") }
        guard !s.utf8.contains(0) else { throw error(i, name, "string contains a NUL byte") }
        return s
    }
    public func optString(_ i: Int32, _ name: String) throws -> String? {
        lua.isNoneOrNil(i) ? nil : try string(i, name)
    }
    public func integer(_ i: Int32, _ name: String) throws -> Int {
        guard lua.type(i) == LUA_TNUMBER else { throw expected(i, name, "integer") }
        guard let n = lua.integer(at: i) else { throw error(i, name, "number has no integer representation") }
        return n
    }
    public func optInteger(_ i: Int32, _ name: String) throws -> Int? {
        lua.isNoneOrNil(i) ? nil : try integer(i, name)
    }
    /// An integer that fits an Int32 (pids, signals, fds).
    public func int32(_ i: Int32, _ name: String) throws -> Int32 {
        let n = try integer(i, name)
        guard n >= Int(Int32.min), n <= Int(Int32.max) else { throw error(i, name, "\(n) is out of range") }
        return Int32(n)
    }
    /// A permission mode between 0 and 0o7777.
    public func mode(_ i: Int32, _ name: String, default value: Int) throws -> mode_t {
        let n = try optInteger(i, name) ?? value
        guard n >= 0, n <= 0o7777 else { throw error(i, name, "must be between 0 and 0o7777") }
        return mode_t(n)
    }
    /// Seconds to wait: finite and not negative.
    public func seconds(_ i: Int32, _ name: String) throws -> Double {
        let s = try number(i, name)
        guard s.isFinite, s >= 0, s < 1e9 else { throw error(i, name, "must be a finite number of seconds >= 0") }
        return s
    }
    public func number(_ i: Int32, _ name: String) throws -> Double {
        guard let n = lua.number(at: i) else { throw expected(i, name, "number") }
        return n
    }
    public func optNumber(_ i: Int32, _ name: String) throws -> Double? {
        lua.isNoneOrNil(i) ? nil : try number(i, name)
    }
    public func boolean(_ i: Int32, _ name: String) throws -> Bool {
        guard lua.type(i) == LUA_TBOOLEAN else { throw expected(i, name, "boolean") }
        return lua.bool(at: i)
    }
    public func table(_ i: Int32, _ name: String) throws {
        guard lua.type(i) == LUA_TTABLE else { throw expected(i, name, "table") }
    }
    public func optTable(_ i: Int32, _ name: String) throws -> Bool {
        if lua.isNoneOrNil(i) { return false }
        try table(i, name)
        return true
    }

    /// A list of strings, such as flags: {"bind", "rec"}.
    public func stringList(_ i: Int32, _ name: String) throws -> [String] {
        try table(i, name)
        var out: [String] = []
        let n = lua.rawLength(i)
        for k in 1...max(n, 1) where n > 0 {
            lua.rawGet(i, k)
            defer { lua.pop() }
            guard lua.type(-1) == LUA_TSTRING, let s = lua.string(at: -1) else {
                throw error(i, name, "item \(k) must be a string, got \(lua.typeName(-1))")
            }
            guard !s.utf8.contains(0) else { throw error(i, name, "item \(k) contains a NUL byte") }
            out.append(s)
        }
        try lua.forEachKey(i) { key in
            if key != nil { throw error(i, name, "expected a list, found key '\(key!)'") }
        }
        return out
    }
    public func optStringList(_ i: Int32, _ name: String) throws -> [String] {
        lua.isNoneOrNil(i) ? [] : try stringList(i, name)
    }

    /// Flag names from a list, or a single string, OR-ed from `known`. Unknown names raise.
    public func flags<T: BinaryInteger>(_ i: Int32, _ name: String, _ known: [String: T]) throws -> T {
        let names: [String]
        if lua.isNoneOrNil(i) { return 0 }
        if lua.type(i) == LUA_TSTRING { names = [try string(i, name)] } else { names = try stringList(i, name) }
        var value: T = 0
        for n in names {
            guard let v = known[n] else {
                throw error(i, name, "unknown flag '\(n)'; known: \(known.keys.sorted().joined(separator: ", "))")
            }
            value |= v
        }
        return value
    }

    /// Checks that the options table at `i` has only `allowed` keys.
    public func options(_ i: Int32, _ name: String, allowed: Set<String>) throws {
        try lua.forEachKey(i) { key in
            guard let key else { throw error(i, name, "option names must be strings") }
            if !allowed.contains(key) {
                throw error(i, name, "unknown option '\(key)'; known: \(allowed.sorted().joined(separator: ", "))")
            }
        }
    }
    /// Reads option `key` of the table at `i` with `read`, which gets the field's stack index.
    public func field<T>(_ i: Int32, _ key: String, _ read: (Int32) throws -> T?) rethrows -> T? {
        lua.rawGet(i, key)
        defer { lua.pop() }
        return lua.isNoneOrNil(-1) ? nil : try read(lua.top)
    }
    /// A typed field with an error naming the option.
    public func stringField(_ i: Int32, _ key: String) throws -> String? {
        try field(i, key) { idx in
            guard lua.type(idx) == LUA_TSTRING, let s = lua.string(at: idx) else {
                throw error(i, key, "string expected, got \(lua.typeName(idx))")
            }
            return s
        }
    }
    public func integerField(_ i: Int32, _ key: String) throws -> Int? {
        try field(i, key) { idx in
            guard lua.type(idx) == LUA_TNUMBER, let n = lua.integer(at: idx) else {
                throw error(i, key, "integer expected, got \(lua.typeName(idx))")
            }
            return n
        }
    }
    public func secondsField(_ i: Int32, _ key: String) throws -> Double? {
        guard let s = try numberField(i, key) else { return nil }
        guard s.isFinite, s >= 0, s < 1e9 else { throw error(i, key, "must be a finite number of seconds >= 0") }
        return s
    }
    public func numberField(_ i: Int32, _ key: String) throws -> Double? {
        try field(i, key) { idx in
            guard let n = lua.number(at: idx) else { throw error(i, key, "number expected, got \(lua.typeName(idx))") }
            return n
        }
    }
    public func boolField(_ i: Int32, _ key: String) throws -> Bool? {
        try field(i, key) { idx in
            guard lua.type(idx) == LUA_TBOOLEAN else { throw error(i, key, "boolean expected, got \(lua.typeName(idx))") }
            return lua.bool(at: idx)
        }
    }
}
