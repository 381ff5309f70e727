/*
 * vivarium-init: the first process of every Vivarium sandbox.
 *
 * Built static (no libc needed in the image) and bind-mounted read-only at /dev/init. As PID 1 of the
 * sandbox's PID namespace it keeps a persistent box alive, reaps the zombies that orphaned processes
 * leave, and exits on SIGTERM, SIGINT, SIGHUP or SIGPWR; the kernel then kills the rest of the
 * namespace. Execs do not run under it: each runs in a cgroup of its own that the daemon can kill.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>

int main(void) {
    sigset_t set;
    sigfillset(&set);
    sigprocmask(SIG_SETMASK, &set, NULL);
    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&set, &info);
        if (sig == SIGCHLD) {
            while (waitpid(-1, NULL, WNOHANG) > 0) {}
        } else if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGPWR) {
            return 0;
        }
    }
}
