/* cove zygote: PID 1 of every sandbox. Spawns processes on request from the host and reports exits.
 *
 * fd 3 is a listening AF_UNIX SOCK_SEQPACKET socket whose file lives in a host-only directory, so
 * only the host can connect; one control connection at a time (a new one replaces the old), which
 * lets a restarted cove server reattach. Everything spawned inherits this process's namespaces,
 * cgroups, seccomp filter, capabilities and no_new_privs. Input is untrusted: bounds-check all.
 *
 * Requests (little-endian u32): SPAWN {1, id, argc, envc} cwd\0 argv..\0 env..\0 + 3 fds (SCM_RIGHTS)
 *                               SIGNAL {2, id, pid, signo}
 *                               SPAWN_TTY {3, ...}: as SPAWN, and fd 0 (a pty slave) becomes the
 *                               controlling terminal of the new session (fork+exec: posix_spawn
 *                               cannot TIOCSCTTY; plain SPAWN keeps the fast posix_spawn path).
 * Reply (12 bytes): {u32 id, i32 kind, i32 value}; kind 1 started(pid) 2 exited(wait status)
 *                   3 spawn failed(errno) 4 signal result(0 or errno).
 * Build: gcc -static -Os -o zygote zygote.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXMSG (256 * 1024)
#define MAXARGS 4096
#define MAXTRACK 4096

static int conn = -1;
static struct { pid_t pid; uint32_t id; } track[MAXTRACK];
static char buf[MAXMSG + 1];
static char *vec[2 * MAXARGS + 2];

static void reply(uint32_t id, int32_t kind, int32_t value) {
    int32_t r[3] = {(int32_t)id, kind, value};
    if (conn >= 0 && send(conn, r, sizeof r, MSG_NOSIGNAL) < 0 && errno != EINTR) {
        close(conn); conn = -1;
    }
}

/* PATH lookup with the request's env (posix_spawnp/execvp would use the zygote's own PATH).
 * Fills full (4096 bytes) with the first executable match; returns 0 or an errno. */
static int find_exec(const char *file, char **envp, char *full) {
    const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (char **e = envp; *e; e++) if (!strncmp(*e, "PATH=", 5)) path = *e + 5;
    int err = ENOENT;
    for (const char *p = path;; p++) {
        const char *end = strchrnul(p, ':');
        size_t dl = (size_t)(end - p), fl = strlen(file);
        size_t n = dl ? dl : 1;  /* an empty PATH entry means the current directory */
        if (n + fl + 2 <= 4096) {
            memcpy(full, dl ? p : ".", n);
            full[n] = '/';
            memcpy(full + n + 1, file, fl + 1);
            if (access(full, X_OK) == 0) return 0;
            if (errno == EACCES) err = EACCES;
        }
        if (!*end) break;
        p = end;
    }
    return err;
}

static int spawn_path(pid_t *pid, const char *file, posix_spawn_file_actions_t *fa,
                      posix_spawnattr_t *at, char **argv, char **envp) {
    if (strchr(file, '/')) return posix_spawn(pid, file, fa, at, argv, envp);
    char full[4096];
    int err = find_exec(file, envp, full);
    return err ? err : posix_spawn(pid, full, fa, at, argv, envp);
}

/* fork+exec for a pty: setsid, then make fd 0 the controlling terminal. Exec errors come back
 * through a CLOEXEC pipe, so a bad command is a spawn failure exactly as with posix_spawn. */
static int spawn_tty(pid_t *pid, const char *cwd, char **argv, char **envp, int fds[3]) {
    int ep[2];
    if (pipe2(ep, O_CLOEXEC) < 0) return errno;
    pid_t c = fork();
    if (c < 0) { int e = errno; close(ep[0]); close(ep[1]); return e; }
    if (c == 0) {
        sigset_t none;
        sigemptyset(&none);
        for (int s = 1; s < 65; s++) signal(s, SIG_DFL);
        sigprocmask(SIG_SETMASK, &none, NULL);
        char full[4096];
        const char *file = argv[0];
        int err = 0;
        if (setsid() < 0 || ioctl(fds[0], TIOCSCTTY, 0) < 0) err = errno;
        for (int i = 0; i < 3 && !err; i++) if (dup2(fds[i], i) < 0) err = errno;
        if (!err && *cwd && chdir(cwd) < 0) err = errno;
        if (!err && !strchr(file, '/') && !(err = find_exec(file, envp, full))) file = full;
        if (!err) { execve(file, argv, envp); err = errno; }
        (void)!write(ep[1], &err, sizeof err);
        _exit(127);
    }
    close(ep[1]);
    int err = 0;
    ssize_t n;
    do n = read(ep[0], &err, sizeof err); while (n < 0 && errno == EINTR);
    close(ep[0]);
    if (n == (ssize_t)sizeof err && err) { waitpid(c, NULL, 0); return err; }
    *pid = c;
    return 0;
}

static void do_spawn(uint32_t id, uint32_t argc, uint32_t envc, size_t len, int fds[3], int tty) {
    if (argc < 1 || argc > MAXARGS || envc > MAXARGS) { reply(id, 3, E2BIG); return; }
    char *p = buf + 16, *end = buf + len;  /* buf[len] == 0 guards the last string */
    char *cwd = p;
    size_t n = 0;
    for (uint32_t i = 0; i < 1 + argc + envc; i++) {
        if (p >= end) { reply(id, 3, EINVAL); return; }
        if (i == 1 + argc) vec[n++] = NULL;
        if (i > 0) vec[n++] = p;
        p += strlen(p) + 1;
    }
    if (p > end + 1) { reply(id, 3, EINVAL); return; }
    if (envc == 0) vec[n++] = NULL;
    vec[n] = NULL;
    char **argv = vec, **envp = vec + argc + 1;

    size_t slot = 0;
    while (slot < MAXTRACK && track[slot].pid) slot++;
    if (slot == MAXTRACK) { reply(id, 3, EAGAIN); return; }

    pid_t pid;
    if (tty) {
        int err = spawn_tty(&pid, cwd, argv, envp, fds);
        if (err) { reply(id, 3, err); return; }
        track[slot].pid = pid;
        track[slot].id = id;
        reply(id, 1, pid);
        return;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &all);
    if (*cwd) posix_spawn_file_actions_addchdir_np(&fa, cwd);
    for (int i = 0; i < 3; i++) posix_spawn_file_actions_adddup2(&fa, fds[i], i);
    int err = spawn_path(&pid, argv[0], &fa, &at, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (err) { reply(id, 3, err); return; }
    track[slot].pid = pid;
    track[slot].id = id;
    reply(id, 1, pid);
}

static void on_message(void) {
    int fds[3] = {-1, -1, -1}, nfds = 0;
    union { char b[CMSG_SPACE(8 * sizeof(int))]; struct cmsghdr align; } cb;
    struct iovec iov = {buf, MAXMSG};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
                        .msg_controllen = sizeof cb.b};
    ssize_t len = recvmsg(conn, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (len < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (len <= 0) { close(conn); conn = -1; return; }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (nfds < 3) fds[nfds++] = fd; else close(fd);
        }
    }
    buf[len] = 0;
    uint32_t h[4] = {0, 0, 0, 0};
    if (len >= 16) memcpy(h, buf, 16);
    int spawn = h[0] == 1 || h[0] == 3;
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) { if (spawn) reply(h[1], 3, E2BIG); }
    else if (spawn && nfds == 3) do_spawn(h[1], h[2], h[3], (size_t)len, fds, h[0] == 3);
    else if (spawn) reply(h[1], 3, EBADF);
    else if (h[0] == 2) {
        int r = 0;
        if (h[2] < 2 || h[2] > 0x3fffffff || h[3] > 64) r = EINVAL;  /* never signal ourselves */
        else if (kill(-(pid_t)h[2], (int)h[3]) < 0 && kill((pid_t)h[2], (int)h[3]) < 0) r = errno;
        reply(h[1], 4, r);
    }
    for (int i = 0; i < nfds; i++) close(fds[i]);
}

static void reap(void) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        for (size_t i = 0; i < MAXTRACK; i++)
            if (track[i].pid == pid) { reply(track[i].id, 2, status); track[i].pid = 0; break; }
}

int main(void) {
    prctl(PR_SET_DUMPABLE, 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD); sigaddset(&set, SIGTERM); sigaddset(&set, SIGINT);
    sigaddset(&set, SIGPIPE); sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    /* The listener must not leak into children (they could accept the host's next connection),
     * and our stdio may be host files handed over by crun: swap it for /dev/null. */
    if (fcntl(3, F_SETFD, FD_CLOEXEC) < 0) return 111;
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) return 111;
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (nul >= 0) { dup2(nul, 0); dup2(nul, 1); dup2(nul, 2); if (nul > 3) close(nul); }
    for (;;) {
        struct pollfd pf[3] = {{3, POLLIN, 0}, {sfd, POLLIN, 0}, {conn, POLLIN, 0}};
        if (poll(pf, conn >= 0 ? 3 : 2, -1) < 0) continue;
        if (pf[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == sizeof si)
                if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
                    if (getpid() == 1) kill(-1, SIGKILL);  /* only ever inside a pid ns */
                    _exit(0);
                }
            reap();
        }
        if (pf[0].revents & POLLIN) {
            int c = accept4(3, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0) {
                /* A host that stops reading must not wedge PID 1: replies time out after 1 s. */
                struct timeval tv = {1, 0};
                setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
                if (conn >= 0) close(conn);
                conn = c;
                continue;
            }
        }
        if (conn >= 0 && (pf[2].revents & (POLLIN | POLLHUP | POLLERR))) on_message();
    }
}
