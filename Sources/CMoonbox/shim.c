#include "cmoonbox.h"
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <linux/bpf.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <termios.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/file.h>
#include <linux/if_packet.h>
#include <linux/if_ether.h>
#include <arpa/inet.h>
#include <sys/vfs.h>
#include <linux/loop.h>

static mb_dispatch_fn dispatcher;

void mb_set_dispatcher(mb_dispatch_fn fn) { dispatcher = fn; }

// Every Swift function reaches Lua through here. Swift returns a status and this C
// frame raises the error, so the longjmp of lua_error never crosses a Swift frame.
static void call_signal_handler(lua_State *L);

static int trampoline(lua_State *L) {
    int n = dispatcher(L, (int)lua_tointeger(L, lua_upvalueindex(1)));
    if (n >= 0) {
        call_signal_handler(L);  // a blocking call may have ended on a caught signal
        return n;
    }
    if (lua_type(L, -1) == LUA_TSTRING) {  // add "file:line:" of the calling Lua code
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

void mb_push_swift_function(lua_State *L, int index, const char *name) {
    (void)name;
    lua_pushinteger(L, index);
    lua_pushcclosure(L, trampoline, 1);
}

int mb_msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {  // an error object: its __tostring, with the traceback too
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
            msg = lua_tostring(L, -1);
            // moonbox.error objects know the script's line that called into the stdlib.
            if (lua_type(L, 1) == LUA_TTABLE && lua_getfield(L, 1, "where") == LUA_TSTRING) {
                msg = lua_pushfstring(L, "%s: %s", lua_tostring(L, -1), msg);
            } else {
                lua_pop(L, 1);
            }
        } else {
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
        }
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

void mb_openlibs(lua_State *L) { luaL_openlibs(L); }

int mb_unshare(int flags) { return unshare(flags); }
int mb_setns(int fd, int nstype) { return setns(fd, nstype); }
pid_t mb_fork(void) { fflush(NULL); return fork(); }

pid_t mb_clone(unsigned long flags) {
    fflush(NULL);
    // x86_64 and arm64 agree on (flags, stack, parent_tid, child_tid, tls) with stack 0.
    return (pid_t)syscall(SYS_clone, flags | SIGCHLD, 0, NULL, NULL, 0);
}

int mb_pivot_root(const char *new_root, const char *put_old) {
    return (int)syscall(SYS_pivot_root, new_root, put_old);
}

int mb_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5) {
    return prctl(option, a2, a3, a4, a5);
}

int mb_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
int mb_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }
int mb_pidfd_send_signal(int pidfd, int sig) { return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0); }
int mb_close_range(unsigned first, unsigned last, int flags) {
    return (int)syscall(SYS_close_range, first, last, flags);
}

long mb_copy_file_range(int src, long long *in_off, int dst, size_t len) {
    loff_t off = (loff_t)*in_off;
    ssize_t n = copy_file_range(src, &off, dst, NULL, len, 0);
    if (n > 0) *in_off = (long long)off;
    return (long)n;
}

int mb_ioctl_int(int fd, unsigned long request, int arg) { return ioctl(fd, request, arg); }
int mb_open(const char *path, int flags, mode_t mode) { return open(path, flags, mode); }
int mb_openat(int dirfd, const char *path, int flags, mode_t mode) { return openat(dirfd, path, flags, mode); }

long long mb_mount_id_at(int dirfd, const char *path, int flags) {
    struct statx sx;
    if (statx(dirfd, path, flags, STATX_MNT_ID, &sx) != 0) return -1;
    if (!(sx.stx_mask & STATX_MNT_ID)) { errno = ENOSYS; return -1; }
    return (long long)sx.stx_mnt_id;
}

long mb_statfs_type(const char *path) {
    struct statfs s;
    if (statfs(path, &s) != 0) return -1;
    return (long)s.f_type;
}

int mb_sethostname(const char *name, size_t len) { return sethostname(name, len); }

int mb_capget_all(int pid, unsigned int out[6]) {
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, pid };
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) != 0) return -1;
    out[0] = d[0].effective; out[1] = d[1].effective;
    out[2] = d[0].permitted; out[3] = d[1].permitted;
    out[4] = d[0].inheritable; out[5] = d[1].inheritable;
    return 0;
}

int mb_capset_all(const unsigned int in[6]) {
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    d[0].effective = in[0]; d[1].effective = in[1];
    d[0].permitted = in[2]; d[1].permitted = in[3];
    d[0].inheritable = in[4]; d[1].inheritable = in[5];
    return (int)syscall(SYS_capset, &h, d);
}

// Bit n set when signal n arrived. Written only by the handler and cleared by the reader.
static volatile unsigned long long caught_signals;

// The process that asked to catch. A forked child inherits the handler but not the
// intent: in it, the signal takes its default action, as if never caught.
static volatile pid_t catcher;

// The Lua side of signal handling: the main state, the process that registered a handler,
// and the hook that was there before ours was armed.
static lua_State *signal_state;
static volatile pid_t handler_owner;
static volatile int in_handler;
static lua_Hook saved_hook;
static int saved_mask, saved_count;
static const char handler_key = 'h';

void mb_signal_set_state(lua_State *L) { signal_state = L; }

static void call_signal_handler(lua_State *L) {
    if (__atomic_load_n(&caught_signals, __ATOMIC_SEQ_CST) == 0 || in_handler || handler_owner != getpid()) return;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &handler_key);
    if (lua_type(L, -1) != LUA_TFUNCTION) { lua_pop(L, 1); return; }
    in_handler = 1;
    int status = lua_pcall(L, 0, 0, 0);
    in_handler = 0;
    if (status != LUA_OK) lua_error(L);  // from C, to the script's own handlers
}

static void signal_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, saved_hook, saved_mask, saved_count);  // the script's own hook, if any, again
    call_signal_handler(L);
}

void mb_signal_set_handler(lua_State *L) {
    lua_rawsetp(L, LUA_REGISTRYINDEX, &handler_key);
    handler_owner = getpid();
}

static void record_signal(int sig) {
    if (getpid() != catcher) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    __atomic_or_fetch(&caught_signals, 1ULL << sig, __ATOMIC_SEQ_CST);
    // A script busy in Lua notices at its next instruction. lua_sethook is safe here (lua.c).
    if (signal_state && handler_owner == getpid() && lua_gethook(signal_state) != signal_hook) {
        saved_hook = lua_gethook(signal_state);
        saved_mask = lua_gethookmask(signal_state);
        saved_count = lua_gethookcount(signal_state);
        lua_sethook(signal_state, signal_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    }
}

int mb_sigprocmask(int how, unsigned long long bits) {
    sigset_t set;
    sigemptyset(&set);
    for (int sig = 1; sig < 64; sig++) if (bits & (1ULL << sig)) sigaddset(&set, sig);
    return sigprocmask(how, &set, NULL);
}

int mb_signal_catch(int sig) {
    catcher = getpid();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = record_signal;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

int mb_signal_reset(int sig, int ignore) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ignore ? SIG_IGN : SIG_DFL;
    sigemptyset(&sa.sa_mask);
    return sigaction(sig, &sa, NULL);
}

unsigned long long mb_signals_caught(int clear) {
    // A forked child inherits the record, not the catch: it has caught nothing itself.
    if (getpid() != catcher) return 0;
    if (clear) return __atomic_exchange_n(&caught_signals, 0, __ATOMIC_SEQ_CST);
    return __atomic_load_n(&caught_signals, __ATOMIC_SEQ_CST);
}

#ifndef SYS_fsopen
#define SYS_move_mount 429
#define SYS_fsopen 430
#define SYS_fsconfig 431
#define SYS_fsmount 432
#endif
int mb_fsopen(const char *fstype) { return (int)syscall(SYS_fsopen, fstype, 1 /* FSOPEN_CLOEXEC */); }
int mb_fsconfig_string(int fsfd, const char *key, const char *value) {
    return (int)syscall(SYS_fsconfig, fsfd, 1 /* FSCONFIG_SET_STRING */, key, value, 0);
}
int mb_fsconfig_flag(int fsfd, const char *key) {
    return (int)syscall(SYS_fsconfig, fsfd, 0 /* FSCONFIG_SET_FLAG */, key, NULL, 0);
}
int mb_fsconfig_create(int fsfd) { return (int)syscall(SYS_fsconfig, fsfd, 6 /* FSCONFIG_CMD_CREATE */, NULL, NULL, 0); }
int mb_fsmount(int fsfd, unsigned int attr) {
    return (int)syscall(SYS_fsmount, fsfd, 1 /* FSMOUNT_CLOEXEC */, attr);
}
int mb_move_mount_to(int mfd, const char *target) {
    return (int)syscall(SYS_move_mount, mfd, "", AT_FDCWD, target, 4 /* MOVE_MOUNT_F_EMPTY_PATH */);
}

int mb_openpty(const char *ptmx, int *master, int *slave, char *name, size_t namelen) {
    int m = open(ptmx ? ptmx : "/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0) return -1;
    // The slave through the master (TIOCGPTPEER) works whichever devpts instance it is in.
    int n = 0, unlock = 0;
    if (ioctl(m, TIOCSPTLCK, &unlock) != 0 || ioctl(m, TIOCGPTN, &n) != 0) {
        int e = errno; close(m); errno = e; return -1;
    }
    snprintf(name, namelen, "/dev/pts/%d", n);
    int s = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0) { int e = errno; close(m); errno = e; return -1; }
    *master = m;
    *slave = s;
    return 0;
}

int mb_tty_get_winsize(int fd, unsigned short *rows, unsigned short *cols) {
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) != 0) return -1;
    *rows = ws.ws_row; *cols = ws.ws_col;
    return 0;
}

int mb_tty_set_winsize(int fd, unsigned short rows, unsigned short cols) {
    struct winsize ws = { .ws_row = rows, .ws_col = cols };
    return ioctl(fd, TIOCSWINSZ, &ws);
}

size_t mb_termios_size(void) { return sizeof(struct termios); }
int mb_tcgetattr(int fd, void *out) { return tcgetattr(fd, (struct termios *)out); }
int mb_tcsetattr(int fd, const void *in) { return tcsetattr(fd, TCSADRAIN, (const struct termios *)in); }
void mb_cfmakeraw(void *t) { cfmakeraw((struct termios *)t); }

int mb_accept4(int fd, void *addr, unsigned int *len, int flags) {
    return accept4(fd, (struct sockaddr *)addr, (socklen_t *)len, flags);
}

/* ns < 0: no timeout. */
int mb_ppoll(struct pollfd *fds, unsigned long n, long long ns) {
    struct timespec ts = { .tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL };
    return ppoll(fds, (nfds_t)n, ns < 0 ? NULL : &ts, NULL);
}

int mb_packet_bind(int fd, int ifindex) {
    struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = ifindex };
    return bind(fd, (struct sockaddr *)&ll, sizeof ll);
}

int mb_flock(int fd, int operation) { return flock(fd, operation); }

int mb_send_fd(int sock, int fd) {
    char byte = 'f';
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
    memset(&u, 0, sizeof u);
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    return sendmsg(sock, &msg, MSG_NOSIGNAL) == 1 ? 0 : -1;
}

int mb_recv_fd(int sock) {
    char byte;
    struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
    ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (n == 0 || !c || c->cmsg_type != SCM_RIGHTS) { errno = ENOMSG; return -1; }
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof(int));
    return fd;
}

int mb_seccomp_load_bpf(const void *program, size_t length, int no_new_privs) {
    if (length == 0 || length % sizeof(struct sock_filter) != 0 || length / sizeof(struct sock_filter) > 0xffff) {
        errno = EINVAL;
        return -1;
    }
    struct sock_fprog prog = { .len = (unsigned short)(length / sizeof(struct sock_filter)),
                               .filter = (struct sock_filter *)program };
    if (no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

int mb_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

#ifndef SYS_openat2
#define SYS_openat2 437
#endif
struct mb_open_how { unsigned long long flags, mode, resolve; };

int mb_openat_in_root(int rootfd, const char *path, int flags, mode_t mode) {
    struct mb_open_how how = { .flags = (unsigned long long)(flags | O_CLOEXEC), .mode = mode,
                               .resolve = 0x10 /* IN_ROOT */ | 0x02 /* NO_MAGICLINKS */ | 0x04 /* NO_SYMLINKS */ };
    return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
}

int mb_openat2(int dirfd, const char *path, int flags, mode_t mode, unsigned long long resolve) {
    struct mb_open_how how = { .flags = (unsigned long long)flags, .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
                               .resolve = resolve };
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
int mb_open_tree(int dirfd, const char *path, unsigned int flags) {
    return (int)syscall(SYS_open_tree, dirfd, path, flags);
}

int mb_move_mount(int from_dfd, const char *from_path, int to_dfd, const char *to_path, unsigned int flags) {
    return (int)syscall(SYS_move_mount, from_dfd, from_path, to_dfd, to_path, flags);
}

int mb_mknodat(int dirfd, const char *name, mode_t mode, unsigned major, unsigned minor) {
    return mknodat(dirfd, name, mode, makedev(major, minor));
}

int mb_fsetxattr(int fd, const char *name, const void *value, size_t size) {
    return fsetxattr(fd, name, value, size, 0);
}

int mb_linkat_fd(int fd, int newdirfd, const char *newname) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return linkat(AT_FDCWD, path, newdirfd, newname, AT_SYMLINK_FOLLOW);
}

int mb_utimens_fd(int fd, long long sec, long nsec) {
    struct timespec ts[2] = { { .tv_sec = sec, .tv_nsec = nsec }, { .tv_sec = sec, .tv_nsec = nsec } };
    return futimens(fd, ts);
}

int mb_utimens_at(int dirfd, const char *name, long long sec, long nsec) {
    struct timespec ts[2] = { { .tv_sec = sec, .tv_nsec = nsec }, { .tv_sec = sec, .tv_nsec = nsec } };
    return utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW);
}

int mb_bpf_device_filter(int cgroupfd, const void *insns, int count, char *log, size_t logsize) {
    union bpf_attr load;
    memset(&load, 0, sizeof load);
    load.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    load.insn_cnt = (unsigned)count;
    load.insns = (unsigned long long)(unsigned long)insns;
    load.license = (unsigned long long)(unsigned long)"Apache";
    load.log_level = log && logsize ? 1 : 0;
    load.log_size = (unsigned)logsize;
    load.log_buf = (unsigned long long)(unsigned long)log;
    int prog = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &load, sizeof load);
    if (prog < 0) return -1;
    if (log && logsize) log[0] = 0;  // the verifier's log only matters when it refused
    union bpf_attr attach;
    memset(&attach, 0, sizeof attach);
    attach.target_fd = (unsigned)cgroupfd;
    attach.attach_bpf_fd = (unsigned)prog;
    attach.attach_type = BPF_CGROUP_DEVICE;
    attach.attach_flags = BPF_F_ALLOW_MULTI;
    int r = (int)syscall(SYS_bpf, BPF_PROG_ATTACH, &attach, sizeof attach);
    int e = errno;
    close(prog);  // the cgroup keeps the program
    errno = e;
    return r;
}

int mb_loop_attach(int backing_fd, int readonly, char *name, size_t namelen) {
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0) return -1;
    for (int tries = 0; tries < 32; tries++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0) { int e = errno; close(ctl); errno = e; return -1; }
        snprintf(name, namelen, "/dev/loop%d", n);
        int fd = open(name, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (fd < 0) { if (errno == ENOENT || errno == EBUSY) continue; int e = errno; close(ctl); errno = e; return -1; }
        struct loop_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.fd = (unsigned)backing_fd;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | (readonly ? LO_FLAGS_READ_ONLY : 0);
        if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0) { close(ctl); return fd; }
        int e = errno;
        close(fd);
        if (e == EBUSY) continue;  /* another process took it meanwhile */
        close(ctl);
        errno = e;
        return -1;
    }
    close(ctl);
    errno = EBUSY;
    return -1;
}
