/*
 * vivarium-shim: the keeper of one detached command (`vivarium exec -d`), on the host.
 *
 * Usage: vivarium-shim DIR MAX_BYTES CGROUP_PROCS... -- RUNTIME ARGS...
 *
 * It detaches at once (the parent exits; the keeper runs in a session of its own, with its standard
 * descriptors on /dev/null), moves itself into the command's cgroup (each CGROUP_PROCS file), so that it
 * outlives the daemon and its service and dies with the sandbox, and runs RUNTIME ARGS (`crun exec`)
 * with stdin from DIR/stdin (a FIFO, held open read-write so that writers may come and go) and stdout
 * and stderr on pipes it reads. What they carry goes to DIR/output as frames of one channel byte (1
 * stdout, 2 stderr), a big-endian 32-bit length and the bytes; when the file would pass MAX_BYTES / 2
 * it becomes DIR/output.1 (replacing the one before, whose size is added to DIR/dropped), so at most
 * MAX_BYTES are kept and the command never blocks on a reader. The command's exit code is written to
 * DIR/status (atomically) when it ends. Nothing here depends on the daemon: killed, restarted or
 * upgraded, the command goes on and its output is kept.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *dir;
static long long max_bytes;
static int out_fd = -1;
static long long out_size;

static void path(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

static void write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        p += n;
        len -= (size_t)n;
    }
}

/* Writes `text` to DIR/name through a temporary name, so a reader sees all of it or nothing. */
static void write_atomically(const char *name, const char *text) {
    char tmp[PATH_MAX], final[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
    path(final, sizeof final, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return;
    write_all(fd, text, strlen(text));
    fsync(fd);
    close(fd);
    rename(tmp, final);
}

static void open_output(void) {
    char p[PATH_MAX];
    path(p, sizeof p, "output");
    out_fd = open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    struct stat st;
    out_size = (out_fd >= 0 && fstat(out_fd, &st) == 0) ? st.st_size : 0;
}

static void rotate(void) {
    char cur[PATH_MAX], old[PATH_MAX];
    path(cur, sizeof cur, "output");
    path(old, sizeof old, "output.1");
    struct stat st;
    if (stat(old, &st) == 0) {
        char p[PATH_MAX], text[32];
        path(p, sizeof p, "dropped");
        long long dropped = 0;
        FILE *f = fopen(p, "r");
        if (f) {
            if (fscanf(f, "%lld", &dropped) != 1) dropped = 0;
            fclose(f);
        }
        snprintf(text, sizeof text, "%lld\n", dropped + (long long)st.st_size);
        write_atomically("dropped", text);
    }
    close(out_fd);
    rename(cur, old);
    open_output();
}

static void frame(unsigned char channel, const char *data, size_t len) {
    if (out_fd < 0) return;
    /* No frame is larger than half the bound, so two files never pass it. */
    size_t most = (size_t)(max_bytes / 2 - 5);
    while (len > most) {
        frame(channel, data, most);
        data += most;
        len -= most;
    }
    if (out_size > 0 && out_size + 5 + (long long)len > max_bytes / 2) rotate();
    unsigned char head[5] = {channel, (unsigned char)(len >> 24), (unsigned char)(len >> 16),
                             (unsigned char)(len >> 8), (unsigned char)len};
    write_all(out_fd, head, 5);
    write_all(out_fd, data, len);
    out_size += 5 + (long long)len;
}

int main(int argc, char **argv) {
    int sep = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            sep = i;
            break;
        }
    }
    if (argc < 5 || sep < 3 || sep + 1 >= argc) {
        fprintf(stderr, "usage: vivarium-shim DIR MAX_BYTES CGROUP_PROCS... -- RUNTIME ARGS...\n");
        return 2;
    }
    dir = argv[1];
    max_bytes = atoll(argv[2]);
    if (max_bytes < 4096) max_bytes = 4096;

    pid_t first = fork();
    if (first < 0) return 1;
    if (first > 0) return 0;
    setsid();
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);

    char self[32];
    snprintf(self, sizeof self, "%d\n", (int)getpid());
    for (int i = 3; i < sep; i++) {
        int fd = open(argv[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, self, strlen(self)) < 0) {
            write_atomically("status", "255\n");
            return 1;
        }
        close(fd);
    }

    open_output();
    char p[PATH_MAX];
    path(p, sizeof p, "stdin");
    int in = open(p, O_RDWR | O_CLOEXEC);
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        write_atomically("status", "255\n");
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        write_atomically("status", "255\n");
        return 1;
    }
    if (child == 0) {
        dup2(in >= 0 ? in : null, 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        execv(argv[sep + 1], argv + sep + 1);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);

    struct pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    static char buf[65536];
    int open_count = 2, status = 0, exited = 0;
    while (open_count > 0) {
        /* Background processes of the command may hold the pipes after it ends: once it has, what is
           already there is read, then the shim stops waiting. */
        int n = poll(fds, 2, exited ? 100 : 1000);
        if (n < 0 && errno == EINTR) continue;
        if (!exited && waitpid(child, &status, WNOHANG) == child) exited = 1;
        if (n == 0) {
            if (exited) break;
            continue;
        }
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t r = read(fds[i].fd, buf, sizeof buf);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_count--;
                continue;
            }
            frame((unsigned char)(i + 1), buf, (size_t)r);
        }
    }
    if (!exited) {
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    char text[16];
    snprintf(text, sizeof text, "%d\n", code);
    if (out_fd >= 0) fsync(out_fd);
    write_atomically("status", text);
    return 0;
}
