// The floor: the least any container runtime can do to run /bin/true in a rootfs.
// clone with the pid, mount, uts, ipc (and net) namespaces, make / rprivate, bind-mount
// the rootfs, pivot_root into it, mount /proc, exec /bin/true, and wait.
// Usage: floor [--no-net] ROOTFS [COUNT]  (COUNT containers one after another)
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what) { perror(what); _exit(125); }

static int run_one(const char *rootfs, int net) {
    unsigned long flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | (net ? CLONE_NEWNET : 0);
    pid_t pid = (pid_t)syscall(SYS_clone, flags | SIGCHLD, 0, NULL, NULL, 0);
    if (pid < 0) die("clone");
    if (pid == 0) {
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) die("mount /");
        if (mount(rootfs, rootfs, NULL, MS_BIND | MS_REC, NULL)) die("bind rootfs");
        if (chdir(rootfs)) die("chdir");
        if (syscall(SYS_pivot_root, ".", ".")) die("pivot_root");
        if (umount2(".", MNT_DETACH)) die("umount old root");
        if (chdir("/")) die("chdir /");
        if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) die("mount proc");
        char *argv[] = { "/bin/true", NULL };
        char *envp[] = { "PATH=/bin", NULL };
        execve(argv[0], argv, envp);
        die("execve");
    }
    int status;
    if (waitpid(pid, &status, 0) < 0) die("waitpid");
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char **argv) {
    int net = 1, i = 1;
    if (argc > 1 && strcmp(argv[1], "--no-net") == 0) { net = 0; i++; }
    if (i >= argc) { fprintf(stderr, "usage: floor [--no-net] ROOTFS [COUNT]\n"); return 2; }
    const char *rootfs = argv[i];
    int count = i + 1 < argc ? atoi(argv[i + 1]) : 1;
    for (int n = 0; n < count; n++) {
        int rc = run_one(rootfs, net);
        if (rc != 0) return rc;
    }
    return 0;
}
