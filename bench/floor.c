// The floor: the least any container runtime can do to run /bin/true in a rootfs.
// clone with the pid, mount, uts, ipc (and net) namespaces, make / rprivate, bind-mount
// the rootfs, pivot_root into it, mount /proc, exec /bin/true, and wait.
// With --cgroup, also what a runtime with limits must do: make a cgroup in the memory, pids
// and cpu hierarchies (v1) or one folder (v2) below this process's own, set a 256M memory
// limit, move the held child in before it goes on, and remove the cgroup after it ends.
// Usage: floor [--no-net] [--cgroup] ROOTFS [COUNT]  (COUNT containers one after another)
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>
#include <errno.h>

static void die(const char *what) { perror(what); _exit(125); }

static char groups[4][1100];
static int ngroups;

static void write_file(const char *dir, const char *file, const char *value) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) die(path);
    if (write(fd, value, strlen(value)) < 0) die(path);
    close(fd);
}

// This process's cgroup path in the v1 hierarchy of `controller` ("" for v2's "0::/path").
static int own_path(const char *controller, char *out, size_t size) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return -1;
    char line[1024];
    int found = -1;
    while (found != 0 && fgets(line, sizeof line, f)) {
        char *a = strchr(line, ':'), *b = a ? strchr(a + 1, ':') : NULL;
        if (!b) continue;
        *b = 0;
        char *list = a + 1, *path = b + 1;
        path[strcspn(path, "\n")] = 0;
        if (!*controller) {
            if (!*list) { snprintf(out, size, "%s", path); found = 0; }
            continue;
        }
        for (char *c = strtok(list, ","); c; c = strtok(NULL, ","))
            if (strcmp(c, controller) == 0) { snprintf(out, size, "%s", path); found = 0; break; }
    }
    fclose(f);
    return found;
}

static void make_groups(int n) {
    static const char *v1[] = { "memory", "pids", "cpu" };
    char own[1024];
    ngroups = 0;
    if (access("/sys/fs/cgroup/memory", F_OK) == 0) {
        for (int i = 0; i < 3; i++) {
            if (own_path(v1[i], own, sizeof own) != 0) die("own cgroup");
            snprintf(groups[ngroups], sizeof groups[0], "/sys/fs/cgroup/%s%s/floor-%d-%d", v1[i], strcmp(own, "/") ? own : "", getpid(), n);
            if (mkdir(groups[ngroups], 0755) && errno != EEXIST) die(groups[ngroups]);
            ngroups++;
        }
        write_file(groups[0], "memory.limit_in_bytes", "268435456");
    } else {
        if (own_path("", own, sizeof own) != 0) die("own cgroup");
        snprintf(groups[0], sizeof groups[0], "/sys/fs/cgroup%s/floor-%d-%d", strcmp(own, "/") ? own : "", getpid(), n);
        if (mkdir(groups[0], 0755) && errno != EEXIST) die(groups[0]);
        ngroups = 1;
        write_file(groups[0], "memory.max", "268435456");
    }
}

static int run_one(const char *rootfs, int net, int cgroup, int n) {
    unsigned long flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | (net ? CLONE_NEWNET : 0);
    int hold[2];
    if (cgroup) {
        make_groups(n);
        if (pipe2(hold, O_CLOEXEC)) die("pipe");
    }
    pid_t pid = (pid_t)syscall(SYS_clone, flags | SIGCHLD, 0, NULL, NULL, 0);
    if (pid < 0) die("clone");
    if (pid == 0) {
        if (cgroup) {
            char b;
            close(hold[1]);
            if (read(hold[0], &b, 1) != 1) _exit(125);  // in its cgroup before anything runs
        }
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
    if (cgroup) {
        char pidtext[32];
        snprintf(pidtext, sizeof pidtext, "%d", pid);
        for (int i = 0; i < ngroups; i++) write_file(groups[i], "cgroup.procs", pidtext);
        close(hold[0]);
        if (write(hold[1], "g", 1) != 1) die("release");
        close(hold[1]);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0) die("waitpid");
    for (int i = 0; cgroup && i < ngroups; i++) {
        while (rmdir(groups[i]) && errno == EBUSY) usleep(100);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(int argc, char **argv) {
    int net = 1, cgroup = 0, i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--no-net") == 0) net = 0;
        else if (strcmp(argv[i], "--cgroup") == 0) cgroup = 1;
        else { fprintf(stderr, "floor: unknown option %s\n", argv[i]); return 2; }
    }
    if (i >= argc) { fprintf(stderr, "usage: floor [--no-net] [--cgroup] ROOTFS [COUNT]\n"); return 2; }
    const char *rootfs = argv[i];
    int count = i + 1 < argc ? atoi(argv[i + 1]) : 1;
    for (int n = 0; n < count; n++) {
        int rc = run_one(rootfs, net, cgroup, n);
        if (rc != 0) return rc;
    }
    return 0;
}
