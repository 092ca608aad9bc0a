import CMoonbox
import Glibc

/// A Lua state with the standard libraries, moonbox.sys and the stdlib modules,
/// and the protected main that runs scripts the way lua.c does.
public final class Runtime {
    public let lua: Lua

    public init() {
        guard let L = luaL_newstate() else { fatalError("moonbox: cannot create a Lua state (out of memory)") }
        lua = Lua(L)
        mb_openlibs(L)
        mb_signal_set_state(L)
        installSearchers()
        // os.exit closes the state by default, so finalizers clean up before the exit.
        _ = load(string: "local exit = os.exit; os.exit = function(code, close) if close == nil then close = true end return exit(code, close) end", chunkname: "=prelude")
        _ = call(arguments: [])
    }

    private var closed = false

    deinit { close() }

    /// Closes the Lua state, running every pending __gc and __close: this is when
    /// the stdlib cleans up what a script left (containers, temporary folders).
    public func close() {
        if !closed {
            closed = true
            lua_close(lua.L)
        }
    }

    /// The functions of moonbox.sys, grouped by kernel concern.
    static let sysModule: [(String, LuaFunction)] =
        namespaceFunctions + processFunctions + credentialFunctions + rlimitFunctions + prctlFunctions
        + signalFunctions + clockFunctions + mountFunctions + inRootFunctions + fileFunctions + fdFunctions + terminalFunctions
        + cgroupFunctions + deviceFilterFunctions + introspectionFunctions + seccompFunctions + archiveFunctions
        + netlinkFunctions + socketFunctions + sizeFunctions + bufferFunctions + loopFunctions

    /// package.preload["moonbox.sys"], then a searcher for MOONBOX_PATH (development),
    /// then the stdlib embedded in the binary, then Lua's own searchers.
    private func installSearchers() {
        let lua = self.lua
        mb_lua_pushglobaltable(lua.L)
        lua.rawGet(-1, "package")
        lua.rawGet(-1, "preload")
        lua.set("moonbox.sys") {
            lua.push(function: { lua in
                lua.push(module: Runtime.sysModule)
                lua.set("_VERSION", moonboxVersion)
                // Knowledge the stdlib shares with this side, kept in one place.
                lua.set("default_path", defaultPath)
                lua.set("capability_names") {
                    lua.push(list: capabilityNumbers.sorted { $0.value < $1.value }.map(\.key))
                }
                return 1
            }, name: "moonbox.sys loader")
        }
        lua.pop()
        lua.rawGet(-1, "searchers")
        let searchers = lua.top
        let count = lua.rawLength(searchers)
        // Shift Lua's searchers (after preload) up by one and put ours at 2.
        if count >= 2 {
            for i in stride(from: count, through: 2, by: -1) {
                lua.rawGet(searchers, i)
                lua_rawseti(lua.L, searchers, lua_Integer(i + 1))
            }
        }
        lua.push(function: Runtime.stdlibSearcher, name: "moonbox stdlib searcher")
        lua_rawseti(lua.L, searchers, 2)
        lua.setTop(0)
    }

    /// Finds "moonbox.x" in $MOONBOX_PATH/moonbox/x.lua (or x/init.lua, for a module made of
    /// several files), or else in the embedded stdlib.
    static let stdlibSearcher: LuaFunction = { lua in
        guard let name = lua.string(at: 1) else { return 0 }
        let base = name.split(separator: ".").joined(separator: "/")
        if let dev = getenv("MOONBOX_PATH").map({ String(cString: $0) }), !dev.isEmpty {
            for dir in dev.split(separator: ":") {
                for relative in [base + ".lua", base + "/init.lua"] {
                    let path = "\(dir)/\(relative)"
                    let (text, _) = readTextFile(path)
                    guard let text else { continue }
                    return load(lua, source: text, chunkname: "@" + path, name: name)
                }
            }
        }
        if let (path, bytecode) = embeddedStdlib[name] ?? embeddedStdlib[name + ".init"] {
            return load(lua, chunk: decodeBase64(bytecode), chunkname: "@" + path, name: name)
        }
        lua.push("\n\tno embedded module '\(name)'")
        return 1
    }

    private static func load(_ lua: Lua, source: String, chunkname: String, name: String) -> Int32 {
        var source = source
        let status = source.withUTF8 { buf in
            buf.withMemoryRebound(to: CChar.self) { luaL_loadbufferx(lua.L, $0.baseAddress, $0.count, chunkname, "t") }
        }
        return finishLoad(lua, status: status, chunkname: chunkname, name: name)
    }

    /// A module compiled at build time (EmbedStdlib): binary chunks come only from the binary.
    private static func load(_ lua: Lua, chunk: [UInt8], chunkname: String, name: String) -> Int32 {
        let status = chunk.withUnsafeBufferPointer { buf in
            buf.withMemoryRebound(to: CChar.self) { luaL_loadbufferx(lua.L, $0.baseAddress, $0.count, chunkname, "b") }
        }
        return finishLoad(lua, status: status, chunkname: chunkname, name: name)
    }

    private static func finishLoad(_ lua: Lua, status: Int32, chunkname: String, name: String) -> Int32 {
        if status != LUA_OK {
            // A syntax error in a module: return the message so require reports it.
            let msg = lua.string(at: -1) ?? "?"
            lua.pop()
            lua.push("\n\terror loading module '\(name)': \(msg)")
            return 1
        }
        lua.push(String(chunkname.dropFirst()))
        return 2
    }

    /// Standard base64 (the embedded stdlib's bytecode), without Foundation on the start path.
    static func decodeBase64(_ text: String) -> [UInt8] {
        var text = text
        return text.withUTF8 { src -> [UInt8] in
            let table = base64Table
            return [UInt8](unsafeUninitializedCapacity: src.count / 4 * 3 + 3) { out, count in
                var acc: UInt32 = 0, bits: UInt32 = 0, n = 0
                for c in src {
                    let v = table[Int(c)]
                    if v == 255 { continue }  // padding
                    acc = (acc &<< 6) | UInt32(v)
                    bits &+= 6
                    if bits >= 8 {
                        bits &-= 8
                        out[n] = UInt8(truncatingIfNeeded: acc &>> bits)
                        n &+= 1
                    }
                }
                count = n
            }
        }
    }

    private static let base64Table: [UInt8] = {
        var table = [UInt8](repeating: 255, count: 256)
        for (i, c) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    // MARK: running code

    /// Sets the global `arg` as lua.c does: arg[0] is the script, arg[-1] the program.
    public func setArguments(script: String, arguments: [String], program: String) {
        lua.newTable()
        lua.append(-1) { lua.push(program) }
        lua.append(0) { lua.push(script) }
        for (i, a) in arguments.enumerated() { lua.append(i + 1) { lua.push(a) } }
        lua_setglobal(lua.L, "arg")
    }

    /// Loads a file ("-" for stdin) or a string. On failure, the message is returned.
    public func load(file: String) -> String? {
        let status = luaL_loadfilex(lua.L, file == "-" ? nil : file, nil)
        return status == LUA_OK ? nil : popMessage()
    }

    public func load(string: String, chunkname: String) -> String? {
        var s = string
        let status = s.withUTF8 { buf in
            buf.withMemoryRebound(to: CChar.self) { mb_luaL_loadbuffer(lua.L, $0.baseAddress, $0.count, chunkname) }
        }
        return status == LUA_OK ? nil : popMessage()
    }

    private func popMessage() -> String {
        let msg = lua.string(at: -1) ?? "(error object is a \(lua.typeName(-1)) value)"
        lua.pop()
        return msg
    }

    /// Calls the loaded chunk on top of the stack with `arguments` under the message
    /// handler. Returns nil, or the error with its traceback.
    public func call(arguments: [String], results: Int32 = 0) -> String? {
        let base = lua.top - 0  // the function's index
        for a in arguments { lua.push(a) }
        lua_pushcclosure(lua.L, mb_msghandler, 0)
        mb_lua_insert(lua.L, base)
        let status = mb_lua_pcall(lua.L, Int32(arguments.count), results, base)
        mb_lua_remove(lua.L, base)
        return status == LUA_OK ? nil : popMessage()
    }

    /// Runs a script file, or a chunk when `chunk` is given; returns the exit status.
    public func run(script: String?, chunk: String?, arguments: [String], program: String) -> Int32 {
        setArguments(script: script ?? "-e", arguments: arguments, program: program)
        let loadError = chunk != nil ? load(string: chunk!, chunkname: "=(command line)") : load(file: script ?? "-")
        if let e = loadError {
            report(e)
            return 1
        }
        if let e = call(arguments: arguments) {
            report(e)
            return 1
        }
        return 0
    }

    /// Prints an uncaught error: one line, "moonbox: FILE:LINE: message"; the traceback only
    /// with --debug (MOONBOX_DEBUG=1).
    public func report(_ message: String) {
        var text = message
        if getenv("MOONBOX_DEBUG").map({ String(cString: $0) }) != "1", let r = text.firstRange(of: "\nstack traceback:") {
            text = String(text[..<r.lowerBound])
        }
        fflush(stdout)
        fputs("moonbox: \(text)\n", stderr)
        fflush(stderr)
    }

    // MARK: the interactive prompt

    public func repl() {
        lua.push(function: { _ in 0 }, name: "noop")  // keep the dispatcher installed
        lua.pop()
        _ = load(string: "sys = require 'moonbox.sys'", chunkname: "=repl")
        _ = call(arguments: [])
        print("moonbox \(moonboxVersion) (Lua 5.4); `sys` is moonbox.sys. Ctrl-D exits.")
        while true {
            guard var line = prompt("moonbox> ") else { print(""); return }
            if line.trimmingSpaces().isEmpty { continue }
            // An expression is printed; a statement is run. Incomplete input asks for more.
            while true {
                if load(string: "return " + line, chunkname: "=stdin") == nil { break }
                let e = load(string: line, chunkname: "=stdin")
                if e == nil { break }
                if e!.hasSuffix("<eof>"), let more = prompt(">> ") {
                    line += "\n" + more
                    continue
                }
                report(e!)
                line = ""
                break
            }
            if line.isEmpty { continue }  // a syntax error was reported
            let base = lua.top - 1
            if let e = call(arguments: [], results: LUA_MULTRET) {
                report(e)
                lua.setTop(base)
                continue
            }
            let n = lua.top - base
            if n > 0 {
                lua_getglobal(lua.L, "print")
                mb_lua_insert(lua.L, base + 1)
                if mb_lua_pcall(lua.L, n, 0, 0) != LUA_OK { report(popMessage()) }
            }
            lua.setTop(base)
        }
    }

    private func prompt(_ text: String) -> String? {
        fputs(text, stdout)
        fflush(stdout)
        return readLine(strippingNewline: true)
    }
}

public let moonboxVersion = "0.1.0"
