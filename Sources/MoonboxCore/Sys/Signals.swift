import CMoonbox
import Glibc

/// Signals: names and numbers, dispositions, and the signals a process has caught.

let signalNumbers: [String: Int32] = [
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "BUS": 7, "FPE": 8, "KILL": 9,
    "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15, "STKFLT": 16,
    "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23,
    "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "PWR": 30, "SYS": 31,
]

func signalName(_ n: Int32) -> String {
    signalNumbers.first { $0.value == n }?.key ?? "SIG\(n)"
}

extension Args {
    /// A signal as a number or a name: "TERM", "SIGTERM" or 15.
    func signal(_ i: Int32, _ name: String) throws -> Int32 {
        if lua.type(i) == LUA_TNUMBER {
            let n = try integer(i, name)
            guard n >= 0, n <= 64 else { throw error(i, name, "signal \(n) out of range") }
            return Int32(n)
        }
        var s = try string(i, name).uppercased()
        if s.hasPrefix("SIG") { s.removeFirst(3) }
        guard let n = signalNumbers[s] else { throw error(i, name, "unknown signal '\(s)'") }
        return n
    }

}

func signalWasCaught() -> Bool { mb_signals_caught(0) != 0 }

extension Args {
    /// Signals as a list of names or numbers, one signal, or "all" (every signal a process
    /// may handle: KILL and STOP, and glibc's own 32 and 33, left out).
    func signals(_ i: Int32, _ name: String) throws -> [Int32] {
        if lua.type(i) == LUA_TSTRING, try string(i, name) == "all" {
            return (1..<65).map(Int32.init).filter { $0 != SIGKILL && $0 != SIGSTOP && $0 != 32 && $0 != 33 }
        }
        guard lua.type(i) == LUA_TTABLE else { return [try signal(i, name)] }
        var sigs: [Int32] = []
        for k in 0..<lua.rawLength(i) {
            lua.rawGet(i, k + 1)
            defer { lua.pop() }
            sigs.append(try signal(lua.top, "\(name)[\(k + 1)]"))
        }
        return sigs
    }
}

let signalFunctions: [(String, LuaFunction)] = [
    // signal(signals, "catch"|"ignore"|"default"): caught signals are read with signals_caught(),
    // or handled by the function given to on_signal. "all" resets every disposition at once, as
    // a runtime does before exec.
    ("signal", { lua in
        let a = Args(lua, "signal")
        let all = lua.type(1) == LUA_TSTRING && lua.string(at: 1) == "all"
        let sigs = try a.signals(1, "signals")
        let action = try a.string(2, "action")
        guard ["catch", "ignore", "default"].contains(action) else { throw a.error(2, "action", "must be 'catch', 'ignore' or 'default'") }
        if all && action == "catch" { throw a.error(1, "signals", "\"all\" cannot be caught") }
        for s in sigs {
            let r: Int32
            switch action {
            case "catch": r = mb_signal_catch(s)
            case "ignore": r = mb_signal_reset(s, 1)
            default: r = mb_signal_reset(s, 0)
            }
            if r != 0 && !all { return lua.fail("signal(\(signalName(s)))") }
        }
        return lua.ok()
    }),
    // signals_caught(): names of the signals caught since the last call, and clears them.
    ("signals_caught", { lua in
        let bits = mb_signals_caught(1)
        lua.push(list: (1..<64).filter { bits & (1 << UInt64($0)) != 0 }.map { signalName(Int32($0)) })
        return 1
    }),
    // on_signal(fn or nil): fn() runs as soon as a caught signal arrives, in this process only:
    // at the script's next Lua instruction, or when the sys call it is blocked in returns
    // (nil, msg, "EINTR"). It reads the signals with signals_caught(). No polling, and a
    // script's own debug hook is kept.
    ("on_signal", { lua in
        let a = Args(lua, "on_signal")
        guard lua.type(1) == LUA_TFUNCTION || lua.isNoneOrNil(1) else { throw a.error(1, "handler", "function or nil expected") }
        lua.setTop(1)
        mb_signal_set_handler(lua.L)
        return lua.ok()
    }),
    // sigprocmask(how, signals): "block", "unblock" or "setmask" the signals ("all" too).
    ("sigprocmask", { lua in
        let a = Args(lua, "sigprocmask")
        let how = try a.string(1, "how")
        let hows: [String: Int32] = ["block": SIG_BLOCK, "unblock": SIG_UNBLOCK, "setmask": SIG_SETMASK]
        guard let h = hows[how] else { throw a.error(1, "how", "must be 'block', 'unblock' or 'setmask'") }
        let bits = try a.signals(2, "signals").reduce(UInt64(0)) { $0 | (1 << UInt64($1)) }
        return mb_sigprocmask(h, bits) == 0 ? lua.ok() : lua.fail("sigprocmask(\(how))")
    }),
]
