import CMoonbox
import Glibc

/// Clocks: clock_gettime(2) and nanosleep(2).

let clockFunctions: [(String, LuaFunction)] = [
    ("clock_gettime", { lua in
        let a = Args(lua, "clock_gettime")
        let name = try a.optString(1, "clock") ?? "monotonic"
        let clocks: [String: clockid_t] = [
            "monotonic": CLOCK_MONOTONIC, "realtime": CLOCK_REALTIME, "boottime": CLOCK_BOOTTIME,
            "process_cputime": CLOCK_PROCESS_CPUTIME_ID,
        ]
        guard let id = clocks[name] else { throw a.error(1, "clock", "unknown clock '\(name)'") }
        var ts = timespec()
        clock_gettime(id, &ts)
        lua.push(Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9)
        return 1
    }),
    ("nanosleep", { lua in
        let a = Args(lua, "nanosleep")
        let s = try a.seconds(1, "seconds")
        var ts = timespec(tv_sec: Int(s), tv_nsec: Int((s - s.rounded(.down)) * 1e9))
        var rem = timespec()
        while Glibc.nanosleep(&ts, &rem) != 0 {
            if errno != EINTR || signalWasCaught() { return lua.fail("nanosleep(\(s))") }
            ts = rem
        }
        return lua.ok()
    }),
]
