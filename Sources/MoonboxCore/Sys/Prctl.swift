import CMoonbox
import Glibc

/// prctl(2): the process controls a runtime needs, by name.

let prctlFunctions: [(String, LuaFunction)] = [
    // prctl(option [, value]): the process controls a runtime needs, by name.
    ("prctl", { lua in
        let a = Args(lua, "prctl")
        let option = try a.string(1, "option")
        func call(_ op: Int32, _ arg: UInt = 0, _ arg3: UInt = 0) -> Int32 { mb_prctl(op, arg, arg3, 0, 0) }
        var r: Int32
        switch option {
        case "set_pdeathsig": r = call(PR_SET_PDEATHSIG, UInt(try a.signal(2, "signal")))
        case "get_pdeathsig":
            var sig: Int32 = 0
            r = withUnsafeMutablePointer(to: &sig) { mb_prctl(PR_GET_PDEATHSIG, UInt(bitPattern: $0), 0, 0, 0) }
            if r == 0 { lua.push(Int(sig)); return 1 }
        case "set_no_new_privs": r = call(PR_SET_NO_NEW_PRIVS, 1)
        case "get_no_new_privs": r = call(PR_GET_NO_NEW_PRIVS); if r >= 0 { lua.push(r == 1); return 1 }
        case "set_dumpable": r = call(PR_SET_DUMPABLE, try a.boolean(2, "dumpable") ? 1 : 0)
        case "get_dumpable": r = call(PR_GET_DUMPABLE); if r >= 0 { lua.push(r == 1); return 1 }
        case "set_child_subreaper": r = call(PR_SET_CHILD_SUBREAPER, lua.isNoneOrNil(2) || lua.bool(at: 2) ? 1 : 0)
        case "set_keepcaps": r = call(PR_SET_KEEPCAPS, try a.boolean(2, "keep") ? 1 : 0)
        case "capbset_drop": r = call(PR_CAPBSET_DROP, UInt(try a.capability(2, "capability")))
        case "capbset_read": r = call(PR_CAPBSET_READ, UInt(try a.capability(2, "capability"))); if r >= 0 { lua.push(r == 1); return 1 }
        case "cap_ambient_clear_all": r = call(PR_CAP_AMBIENT, UInt(PR_CAP_AMBIENT_CLEAR_ALL))
        case "cap_ambient_raise": r = mb_prctl(PR_CAP_AMBIENT, UInt(PR_CAP_AMBIENT_RAISE), UInt(try a.capability(2, "capability")), 0, 0)
        case "set_name":
            let name = try a.string(2, "name")
            r = name.withCString { mb_prctl(PR_SET_NAME, UInt(bitPattern: $0), 0, 0, 0) }
        default:
            throw a.error(1, "option", "unknown prctl option '\(option)'; known: set_pdeathsig, get_pdeathsig, set_no_new_privs, get_no_new_privs, set_dumpable, get_dumpable, set_child_subreaper, set_keepcaps, capbset_drop, capbset_read, cap_ambient_clear_all, cap_ambient_raise, set_name")
        }
        return r >= 0 ? lua.ok() : lua.fail("prctl(\(option))")
    }),
]
