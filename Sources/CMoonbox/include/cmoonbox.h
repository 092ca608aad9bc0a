// The C side of moonbox: what Swift cannot reach by itself.
// 1. Lua API macros as inline functions.
// 2. The trampoline: Swift functions return a status, and only C raises Lua errors,
//    so a longjmp never crosses a Swift frame.
// 3. Syscalls that are variadic, macros, or need _GNU_SOURCE.
#ifndef CMOONBOX_H
#define CMOONBOX_H

#include <lua5.4/lua.h>
#include <lua5.4/lauxlib.h>
#include <lua5.4/lualib.h>
#include <seccomp.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/resource.h>
#include <sys/xattr.h>
#include <sys/sysmacros.h>
#include <sys/mount.h>
#include <signal.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <linux/prctl.h>
#include <unistd.h>

// ---- Lua macros ----
static inline void mb_lua_pop(lua_State *L, int n) { lua_settop(L, -(n)-1); }
static inline void mb_lua_insert(lua_State *L, int i) { lua_rotate(L, i, 1); }
static inline void mb_lua_remove(lua_State *L, int i) { lua_rotate(L, i, -1); lua_settop(L, -2); }
static inline int mb_lua_pcall(lua_State *L, int nargs, int nresults, int msgh) {
    return lua_pcallk(L, nargs, nresults, msgh, 0, NULL);
}
static inline int mb_luaL_loadbuffer(lua_State *L, const char *s, size_t sz, const char *name) {
    return luaL_loadbufferx(L, s, sz, name, NULL);
}
static inline void mb_lua_pushglobaltable(lua_State *L) { lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS); }
static inline void *mb_lua_newuserdata(lua_State *L, size_t size) { return lua_newuserdatauv(L, size, 1); }
static inline int mb_luaL_getmetatable(lua_State *L, const char *name) { return lua_getfield(L, LUA_REGISTRYINDEX, name); }

// ---- The trampoline ----
// A Swift function returns n >= 0 results, or -1 with the error value on top of the stack.
typedef int (*mb_dispatch_fn)(lua_State *L, int index);
void mb_set_dispatcher(mb_dispatch_fn fn);
// Pushes a Lua function that calls Swift function number `index` through the trampoline.
void mb_push_swift_function(lua_State *L, int index, const char *name);
// The message handler used by the protected main: adds a traceback to string errors.
int mb_msghandler(lua_State *L);
// Opens the standard Lua libraries (luaL_openlibs).
void mb_openlibs(lua_State *L);

// ---- wait(2) status macros ----
static inline int mb_wifexited(int s) { return WIFEXITED(s); }
static inline int mb_wexitstatus(int s) { return WEXITSTATUS(s); }
static inline int mb_wifsignaled(int s) { return WIFSIGNALED(s); }
static inline int mb_wtermsig(int s) { return WTERMSIG(s); }
static inline int mb_wcoredump(int s) { return WCOREDUMP(s); }
static inline int mb_wifstopped(int s) { return WIFSTOPPED(s); }
static inline int mb_wstopsig(int s) { return WSTOPSIG(s); }

// ---- device numbers ----
static inline dev_t mb_makedev(unsigned maj, unsigned min) { return makedev(maj, min); }
static inline unsigned mb_major(dev_t d) { return major(d); }
static inline unsigned mb_minor(dev_t d) { return minor(d); }

// ---- syscalls Swift cannot call directly ----
int mb_unshare(int flags);
int mb_setns(int fd, int nstype);
// fork(2) through glibc, so atfork handlers run.
pid_t mb_fork(void);
// clone(2) without a new stack: returns like fork, entering the namespaces in `flags`.
pid_t mb_clone(unsigned long flags);
int mb_pivot_root(const char *new_root, const char *put_old);
int mb_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5);
int mb_pipe2(int fds[2], int flags);
int mb_pidfd_open(pid_t pid);
int mb_pidfd_send_signal(int pidfd, int sig);
int mb_close_range(unsigned first, unsigned last, int flags);
// copy_file_range(2) from *in_off in src to the current offset of dst.
long mb_copy_file_range(int src, long long *in_off, int dst, size_t len);
int mb_ioctl_int(int fd, unsigned long request, int arg);
int mb_open(const char *path, int flags, mode_t mode);
int mb_openat(int dirfd, const char *path, int flags, mode_t mode);
// Mount id of a path through statx(STATX_MNT_ID); -1 with errno on failure.
long long mb_mount_id_at(int dirfd, const char *path, int flags);
int mb_sethostname(const char *name, size_t len);
int mb_capget_all(int pid, unsigned int out[6]);
int mb_capset_all(const unsigned int in[6]);
// The new mount API, for overlays with more layers than one page of options holds.
int mb_fsopen(const char *fstype);
int mb_fsconfig_string(int fsfd, const char *key, const char *value);
int mb_fsconfig_create(int fsfd);
int mb_fsconfig_flag(int fsfd, const char *key);
// fsmount(2) with MOUNT_ATTR_* bits (1 ro, 2 nosuid, 4 nodev, 8 noexec): a detached mount.
int mb_fsmount(int fsfd, unsigned int attr);
int mb_move_mount_to(int mfd, const char *target);

// The filesystem type (statfs(2) f_type) of the filesystem holding path; -1 with errno.
long mb_statfs_type(const char *path);

// ---- block devices ----
// Attaches the file open at backing_fd to a free loop device (LOOP_CONFIGURE, autoclear: the
// device goes when its last user does). Returns the device's fd; name gets its path.
int mb_loop_attach(int backing_fd, int readonly, char *name, size_t namelen);

// ---- terminals and network devices ----
// Opens a new pty pair: master (O_CLOEXEC) and slave (O_NOCTTY|O_CLOEXEC); name gets the slave path.
int mb_openpty(const char *ptmx, int *master, int *slave, char *name, size_t namelen);
// Passes an fd over a unix socket (SCM_RIGHTS), as runc's console socket does.
int mb_send_fd(int sock, int fd);
/* _GNU_SOURCE socket calls, and a packet socket's bind (struct sockaddr_ll). */
int mb_accept4(int fd, void *addr, unsigned int *len, int flags);
int mb_ppoll(struct pollfd *fds, unsigned long n, long long ns);
int mb_packet_bind(int fd, int ifindex);
/* flock(2): Swift sees only struct flock under that name. */
int mb_flock(int fd, int operation);
int mb_recv_fd(int sock);
// Sets or clears IFF_UP on a network device, like `ip link set NAME up`.
int mb_tty_get_winsize(int fd, unsigned short *rows, unsigned short *cols);
int mb_tty_set_winsize(int fd, unsigned short rows, unsigned short cols);
// termios as opaque bytes, so Lua can save and restore a terminal's mode.
size_t mb_termios_size(void);
int mb_tcgetattr(int fd, void *out);
int mb_tcsetattr(int fd, const void *in);
void mb_cfmakeraw(void *t);

// ---- seccomp ----
static inline uint32_t mb_SCMP_ACT_ERRNO(uint32_t e) { return SCMP_ACT_ERRNO(e); }
// Loads a compiled classic-BPF seccomp program (sock_filter array bytes), setting
// no_new_privs first when asked (without it the kernel wants CAP_SYS_ADMIN, as runc relies on).
int mb_seccomp_load_bpf(const void *program, size_t length, int no_new_privs);
int mb_memfd_create(const char *name);

// ---- cgroup v2 device filters ----
// Loads an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE (`count` 8-byte instructions) and
// attaches it to the cgroup v2 folder `cgroupfd`. On a verifier failure `log` holds why.
int mb_bpf_device_filter(int cgroupfd, const void *insns, int count, char *log, size_t logsize);

// ---- paths resolved inside a root ----
// openat2(2) with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS: the path
// stays inside `rootfd` and no symlink is followed on the way.
int mb_openat_in_root(int rootfd, const char *path, int flags, mode_t mode);
// openat2(2) with the given RESOLVE_* bits.
int mb_openat2(int dirfd, const char *path, int flags, mode_t mode, unsigned long long resolve);
// open_tree(2) and move_mount(2) (an fd or a path on either side: an empty path means the fd).
int mb_open_tree(int dirfd, const char *path, unsigned int flags);
int mb_move_mount(int from_dfd, const char *from_path, int to_dfd, const char *to_path, unsigned int flags);
int mb_mknodat(int dirfd, const char *name, mode_t mode, unsigned major, unsigned minor);
int mb_fsetxattr(int fd, const char *name, const void *value, size_t size);
int mb_linkat_fd(int fd, int newdirfd, const char *newname);
int mb_utimens_fd(int fd, long long sec, long nsec);
int mb_utimens_at(int dirfd, const char *name, long long sec, long nsec);

// ---- signals ----
// Installs a handler that records `sig` (without SA_RESTART, so blocking calls
// return EINTR), or restores SIG_DFL / SIG_IGN. Returns 0 or -1 with errno.
int mb_signal_catch(int sig);
int mb_signal_reset(int sig, int ignore);
// The caught signals as a bit mask (bit n = signal n); `clear` empties it.
unsigned long long mb_signals_caught(int clear);
// The main Lua state, where a caught signal arms a one-shot hook (as lua.c's laction does).
void mb_signal_set_state(lua_State *L);
// Makes the function on top of the stack (popped; nil removes it) the handler this process
// runs, outside any Swift frame, as soon as a caught signal arrives: at the next Lua
// instruction of the main thread, or when the current moonbox.sys call returns.
void mb_signal_set_handler(lua_State *L);
// sigprocmask(2) over a bit mask of signals (bit n = signal n).
int mb_sigprocmask(int how, unsigned long long bits);

// Constants Swift imports badly or not at all.
static inline int mb_TIOCSCTTY(void) { return TIOCSCTTY; }
static inline int mb_AT_EMPTY_PATH(void) { return 0x1000; }  // AT_EMPTY_PATH, a _GNU_SOURCE name

#endif
