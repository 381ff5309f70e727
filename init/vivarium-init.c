/*
 * vivarium-init: the first process of every Vivarium sandbox, and the wrapper of every exec.
 *
 * Built static (no libc needed in the image) and bind-mounted read-only at /dev/init.
 *
 *   vivarium-init                 PID 1 of a persistent box: reaps zombies, exits on SIGTERM/SIGINT
 *                                 (the kernel then kills the rest of the PID namespace).
 *   vivarium-init -- CMD ARG...   PID 1 running CMD: reaps zombies, forwards signals, exits with CMD.
 *   vivarium-init -x [-t MS] -- CMD ...
 *                                 exec wrapper: a child subreaper around CMD. Exits with CMD's status
 *                                 when CMD exits. When MS milliseconds have passed, or on
 *                                 SIGTERM/SIGINT/SIGHUP, it SIGKILLs every process CMD started
 *                                 (orphans are reparented to the wrapper, so none escape) and exits 137.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int exit_status(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 1;
}

/* SIGKILL every child, reap, and repeat until no child is left: grandchildren orphaned by a kill
   are reparented to us (we are a subreaper or PID 1) and are caught by the next round. */
static void kill_all_children(void) {
    for (int round = 0; round < 10000; round++) {
        int found = 0;
        DIR *d = opendir("/proc");
        if (d) {
            struct dirent *e;
            pid_t self = getpid();
            while ((e = readdir(d)) != NULL) {
                pid_t pid = (pid_t)atoi(e->d_name);
                if (pid <= 0 || pid == self) continue;
                char path[64], buf[512];
                snprintf(path, sizeof path, "/proc/%d/stat", pid);
                FILE *f = fopen(path, "re");
                if (!f) continue;
                size_t n = fread(buf, 1, sizeof buf - 1, f);
                fclose(f);
                buf[n] = 0;
                char *rp = strrchr(buf, ')');
                if (!rp) continue;
                char state;
                int ppid;
                if (sscanf(rp + 2, "%c %d", &state, &ppid) != 2) continue;
                if (ppid == self) {
                    found = 1;
                    kill(pid, SIGKILL);
                }
            }
            closedir(d);
        }
        int status;
        while (waitpid(-1, &status, WNOHANG) > 0) found = 1;
        if (!found) {
            /* Block until the last children are gone, or learn there are none. */
            if (waitpid(-1, &status, WNOHANG) < 0 && errno == ECHILD) return;
        }
    }
}

int main(int argc, char **argv) {
    int exec_mode = 0;
    int argi = 1;
    long timeout_ms = -1;
    if (argi < argc && strcmp(argv[argi], "-x") == 0) {
        exec_mode = 1;
        argi++;
    }
    if (exec_mode && argi + 1 < argc && strcmp(argv[argi], "-t") == 0) {
        char *end = NULL;
        timeout_ms = strtol(argv[argi + 1], &end, 10);
        if (!end || *end != 0 || timeout_ms <= 0) {
            fprintf(stderr, "vivarium-init: -t needs a positive number of milliseconds\n");
            return 2;
        }
        argi += 2;
    }
    if (argi < argc && strcmp(argv[argi], "--") == 0) argi++;
    char **cmd = argi < argc ? &argv[argi] : NULL;

    sigset_t set, old;
    sigfillset(&set);
    sigprocmask(SIG_SETMASK, &set, &old);
    if (exec_mode) prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

    pid_t child = -1;
    if (cmd) {
        child = fork();
        if (child < 0) {
            perror("vivarium-init: fork");
            return 126;
        }
        if (child == 0) {
            sigprocmask(SIG_SETMASK, &old, NULL);
            execvp(cmd[0], cmd);
            fprintf(stderr, "vivarium-init: %s: %s\n", cmd[0], strerror(errno));
            _exit(errno == ENOENT ? 127 : 126);
        }
    } else if (exec_mode) {
        fprintf(stderr, "vivarium-init: -x needs a command\n");
        return 2;
    }

    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    for (;;) {
        siginfo_t info;
        int sig;
        if (timeout_ms > 0) {
            struct timespec now, left;
            clock_gettime(CLOCK_MONOTONIC, &now);
            left.tv_sec = deadline.tv_sec - now.tv_sec;
            left.tv_nsec = deadline.tv_nsec - now.tv_nsec;
            if (left.tv_nsec < 0) {
                left.tv_sec--;
                left.tv_nsec += 1000000000L;
            }
            if (left.tv_sec < 0) {
                kill_all_children();
                return 137;
            }
            sig = sigtimedwait(&set, &info, &left);
            if (sig < 0 && errno == EAGAIN) continue;
        } else {
            sig = sigwaitinfo(&set, &info);
        }
        if (sig < 0) continue;
        if (sig == SIGCHLD) {
            int status;
            pid_t pid;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                if (pid == child) return exit_status(status);
            }
            continue;
        }
        if (exec_mode) {
            if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
                kill_all_children();
                return 137;
            }
            continue;
        }
        if (child > 0) {
            kill(child, sig);
            continue;
        }
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGPWR) return 0;
    }
}
