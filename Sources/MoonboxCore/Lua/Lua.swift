import CMoonbox
import Glibc

/// A raised Lua error: the message becomes the Lua error value, raised from C by the trampoline.
public struct LuaError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A Swift function callable from Lua. It returns the number of results it pushed,
/// or throws a `LuaError`, which the C trampoline raises after this frame is gone.
public typealias LuaFunction = (Lua) throws -> Int32

/// Every Swift function Lua can call, by trampoline index. Registered once, before
/// any script runs, from the single runtime thread.
nonisolated(unsafe) private var swiftFunctions: [LuaFunction] = []

private let dispatch: mb_dispatch_fn = { state, index in
    let lua = Lua(state!)
    do {
        return try swiftFunctions[Int(index)](lua)
    } catch let error as LuaError {
        lua.push(error.message)
        return -1
    } catch {
        lua.push("\(error)")
        return -1
    }
}

/// A borrowed lua_State with typed helpers. Swift only uses raw table access
/// (no metamethods), so nothing here can raise a Lua error across a Swift frame.
public struct Lua {
    public let L: OpaquePointer

    public init(_ L: OpaquePointer) { self.L = L }

    // MARK: stack

    public var top: Int32 { lua_gettop(L) }
    public func setTop(_ n: Int32) { lua_settop(L, n) }
    public func pop(_ n: Int32 = 1) { mb_lua_pop(L, n) }
    public func type(_ i: Int32) -> Int32 { lua_type(L, i) }
    public func typeName(_ i: Int32) -> String { String(cString: lua_typename(L, lua_type(L, i))) }
    public func isNoneOrNil(_ i: Int32) -> Bool { lua_type(L, i) <= LUA_TNIL }
    public func absIndex(_ i: Int32) -> Int32 { lua_absindex(L, i) }

    // MARK: push

    public func push(_ s: String) {
        var s = s
        s.withUTF8 { buf in
            buf.withMemoryRebound(to: CChar.self) { _ = lua_pushlstring(L, $0.baseAddress, $0.count) }
        }
    }
    public func push(bytes: UnsafeRawBufferPointer) {
        _ = lua_pushlstring(L, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
    }
    public func push(_ n: Int) { lua_pushinteger(L, lua_Integer(n)) }
    public func push(_ n: Int32) { lua_pushinteger(L, lua_Integer(n)) }
    public func push(_ n: Int64) { lua_pushinteger(L, lua_Integer(n)) }
    public func push(_ n: UInt64) { lua_pushinteger(L, lua_Integer(bitPattern: n)) }
    public func push(_ d: Double) { lua_pushnumber(L, d) }
    public func push(_ b: Bool) { lua_pushboolean(L, b ? 1 : 0) }
    public func pushNil() { lua_pushnil(L) }
    public func pushValue(_ i: Int32) { lua_pushvalue(L, i) }
    public func newTable(array: Int32 = 0, records: Int32 = 0) { lua_createtable(L, array, records) }

    /// t[key] = value on the table at the top of the stack, for a value just pushed by `body`.
    public func set(_ key: String, _ body: () -> Void) {
        push(key)
        body()
        lua_rawset(L, -3)
    }
    public func set(_ key: String, _ value: String) { set(key) { push(value) } }
    public func set(_ key: String, _ value: Int) { set(key) { push(value) } }
    public func set(_ key: String, _ value: Int64) { set(key) { push(value) } }
    public func set(_ key: String, _ value: Double) { set(key) { push(value) } }
    public func set(_ key: String, _ value: Bool) { set(key) { push(value) } }
    /// t[n] = value on the table at the top of the stack.
    public func append(_ n: Int, _ body: () -> Void) {
        body()
        lua_rawseti(L, -2, lua_Integer(n))
    }

    /// Pushes a list of strings as a Lua sequence.
    public func push(list: [String]) {
        newTable(array: Int32(list.count))
        for (i, s) in list.enumerated() { append(i + 1) { push(s) } }
    }

    // MARK: read

    public func string(at i: Int32) -> String? {
        guard lua_type(L, i) == LUA_TSTRING || lua_type(L, i) == LUA_TNUMBER else { return nil }
        var len = 0
        guard let p = lua_tolstring(L, i, &len) else { return nil }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: len), as: UTF8.self)
    }
    /// The raw bytes of a Lua string at `i`, for binary data.
    public func withBytes<R>(at i: Int32, _ body: (UnsafeRawBufferPointer) -> R) -> R? {
        guard lua_type(L, i) == LUA_TSTRING else { return nil }
        var len = 0
        guard let p = lua_tolstring(L, i, &len) else { return nil }
        return body(UnsafeRawBufferPointer(start: p, count: len))
    }
    public func integer(at i: Int32) -> Int? {
        var ok: Int32 = 0
        let v = lua_tointegerx(L, i, &ok)
        return ok != 0 ? Int(v) : nil
    }
    public func number(at i: Int32) -> Double? {
        guard lua_type(L, i) == LUA_TNUMBER else { return nil }
        return lua_tonumberx(L, i, nil)
    }
    public func bool(at i: Int32) -> Bool { lua_toboolean(L, i) != 0 }

    /// Pushes t[key] for the table at `table` without metamethods, and returns its type.
    @discardableResult
    public func rawGet(_ table: Int32, _ key: String) -> Int32 {
        let t = absIndex(table)
        push(key)
        return lua_rawget(L, t)
    }
    @discardableResult
    public func rawGet(_ table: Int32, _ n: Int) -> Int32 {
        lua_rawgeti(L, table, lua_Integer(n))
    }
    public func rawLength(_ i: Int32) -> Int { Int(lua_rawlen(L, i)) }

    /// Calls `body` for every key of the table at `table` that is a string; other keys are reported as nil.
    public func forEachKey(_ table: Int32, _ body: (String?) throws -> Void) rethrows {
        let t = absIndex(table)
        pushNil()
        while lua_next(L, t) != 0 {
            pop()  // the value; keep the key for lua_next
            let key = lua_type(L, -1) == LUA_TSTRING ? string(at: -1) : nil
            do { try body(key) } catch { pop(); throw error }
        }
    }

    // MARK: functions and modules

    /// Pushes a Swift function as a Lua function.
    public func push(function: @escaping LuaFunction, name: String) {
        Lua.installDispatcher()
        swiftFunctions.append(function)
        mb_push_swift_function(L, Int32(swiftFunctions.count - 1), name)
    }

    /// Pushes a table of Swift functions.
    public func push(module functions: [(String, LuaFunction)]) {
        newTable(records: Int32(functions.count))
        for (name, fn) in functions {
            set(name) { push(function: fn, name: name) }
        }
    }

    private static var dispatcherInstalled = false
    static func installDispatcher() {
        if !dispatcherInstalled {
            mb_set_dispatcher(dispatch)
            dispatcherInstalled = true
        }
    }
}

// MARK: the failure convention

extension Lua {
    /// Pushes `nil, "op(arg): strerror", "ERRNO"` and returns 3, the failure shape of every primitive.
    public func fail(_ operation: String, errno code: Int32 = errno) -> Int32 {
        pushNil()
        push("\(operation): \(errnoText(code))")
        push(errnoName(code))
        return 3
    }
    /// A failure with a message of our own, still ending in an errno name.
    public func fail(message: String, errnoName name: String) -> Int32 {
        pushNil()
        push(message)
        push(name)
        return 3
    }
    /// Pushes `true` and returns 1: the success of a call that has no value to give.
    public func ok() -> Int32 {
        push(true)
        return 1
    }
}
