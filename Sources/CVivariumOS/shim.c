#define _GNU_SOURCE
#include "vivarium_os.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/fsuid.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <zlib.h>
#include <zstd.h>
#include <endian.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <linux/loop.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

struct spawn_ctx {
    const vv_spawn_attr *attr;
    int devnull;
    volatile int err;
};

/* Runs in the vfork child: shares memory with the parent thread, which is suspended until exec.
   Only raw syscalls and async-signal-safe calls here. */
static int spawn_child(void *arg) {
    struct spawn_ctx *ctx = arg;
    const vv_spawn_attr *a = ctx->attr;
    sigset_t all;
    sigemptyset(&all);
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP) continue;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        syscall(SYS_rt_sigaction, s, &sa, NULL, _NSIG / 8);
    }
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, NULL, _NSIG / 8);

    int fds[3] = {a->stdin_fd, a->stdout_fd, a->stderr_fd};
    for (int i = 0; i < 3; i++) {
        int fd = fds[i] >= 0 ? fds[i] : ctx->devnull;
        if (fd == i) {
            int fl = fcntl(fd, F_GETFD);
            if (fl >= 0) fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC);
        } else if (dup2(fd, i) < 0) {
            goto fail;
        }
    }
    syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);
    if (a->flags & VV_SPAWN_HIDE_CGROUP2) {
        if (unshare(CLONE_NEWNS) < 0) goto fail;
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) goto fail;
        if (umount2("/sys/fs/cgroup/unified", MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
            goto fail;
    }
    if (a->flags & VV_SPAWN_OOM_SCORE) {
        char text[16];
        int n = snprintf(text, sizeof text, "%d", a->oom_score_adj);
        int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (fd < 0) goto fail;
        if (write(fd, text, (size_t)n) != n) {
            close(fd);
            goto fail;
        }
        close(fd);
    }
    execve(a->path, a->argv, a->envp);
fail:
    ctx->err = errno ? errno : EIO;
    _exit(127);
}

int vv_spawn(const vv_spawn_attr *attr, pid_t *pid, int *pidfd) {
    struct spawn_ctx ctx = {.attr = attr, .devnull = -1, .err = 0};
    ctx.devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (ctx.devnull < 0) return -errno;
    size_t stack_size = 64 * 1024;
    void *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        int e = errno;
        close(ctx.devnull);
        return -e;
    }
    /* Block all signals across clone so no handler of the parent runs on the child's stack. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int fd = -1;
    pid_t p = clone(spawn_child, (char *)stack + stack_size, CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &ctx,
                    &fd, NULL, NULL);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, stack_size);
    close(ctx.devnull);
    if (p < 0) return -clone_errno;
    if (ctx.err != 0) {
        /* The child failed before exec and has exited: reap it here, it never ran anything. */
        siginfo_t info;
        syscall(SYS_waitid, P_PIDFD, fd, &info, WEXITED, NULL);
        close(fd);
        return -ctx.err;
    }
    *pid = p;
    *pidfd = fd;
    return 0;
}

int vv_pidfd_reap(int pidfd, int *code, int *signaled) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (syscall(SYS_waitid, P_PIDFD, pidfd, &info, WEXITED | WNOHANG, NULL) < 0) return -errno;
    if (info.si_pid == 0) return 0;
    *signaled = (info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED);
    *code = info.si_status;
    return 1;
}

int vv_peek_exited_child(void) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    if (syscall(SYS_waitid, P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT, NULL) < 0) return -errno;
    return info.si_pid;
}

int vv_reap_pid(pid_t pid) {
    siginfo_t info;
    if (syscall(SYS_waitid, P_PID, pid, &info, WEXITED | WNOHANG, NULL) < 0) return -errno;
    return 0;
}

int vv_pidfd_open(pid_t pid) {
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0) return -errno;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return fd;
}

int vv_pidfd_send_signal(int pidfd, int sig) {
    if (syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0) return -errno;
    return 0;
}

/* The idmapping helper only has to exist while its parent reads its namespace. It shares the daemon's
   memory but holds a copy of its descriptor table, so it must never wait on a descriptor: another
   thread's helper could hold the other end open, and two creates would then wait for each other
   forever. It waits for nothing but its SIGKILL, and dies with its parent thread. */
static int userns_child(void *arg) {
    (void)arg;
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    for (;;) pause();
    return 0;
}

static int write_file(const char *path, const char *data) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    size_t len = strlen(data);
    ssize_t n = write(fd, data, len);
    int e = errno;
    close(fd);
    if (n < 0) return -e;
    return (size_t)n == len ? 0 : -EIO;
}

int vv_userns_fd(const char *uid_map, const char *gid_map) {
    size_t stack_size = 16 * 1024;
    void *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return -errno;
    int pfd = -1;
    pid_t pid = clone(userns_child, (char *)stack + stack_size, CLONE_NEWUSER | CLONE_VM | CLONE_PIDFD | SIGCHLD, NULL,
                      &pfd, NULL, NULL);
    if (pid < 0) {
        int e = errno;
        munmap(stack, stack_size);
        return -e;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/uid_map", pid);
    int result = write_file(path, uid_map);
    if (result == 0) {
        snprintf(path, sizeof path, "/proc/%d/gid_map", pid);
        result = write_file(path, gid_map);
    }
    if (result == 0) {
        snprintf(path, sizeof path, "/proc/%d/ns/user", pid);
        result = open(path, O_RDONLY | O_CLOEXEC);
        if (result < 0) result = -errno;
    }
    /* The namespace lives on through the fd; the helper goes at once, and the wait is for an exit
       already under way, never for another thread. */
    syscall(SYS_pidfd_send_signal, pfd, SIGKILL, NULL, 0);
    siginfo_t info;
    while (syscall(SYS_waitid, P_PIDFD, pfd, &info, WEXITED, NULL) < 0 && errno == EINTR) {}
    close(pfd);
    munmap(stack, stack_size);
    return result;
}

int vv_idmapped_bind(const char *src, const char *target, int userns_fd, int readonly) {
    int fd = (int)syscall(SYS_open_tree, AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (fd < 0) return -errno;
    struct mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = MOUNT_ATTR_IDMAP | (readonly ? MOUNT_ATTR_RDONLY : 0) | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID;
    attr.userns_fd = (uint64_t)userns_fd;
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (syscall(SYS_move_mount, fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    close(fd);
    return 0;
}

int vv_mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data) {
    return mount(source, target, fstype, flags, data) < 0 ? -errno : 0;
}

int vv_umount(const char *target, int detach) {
    return umount2(target, detach ? MNT_DETACH : 0) < 0 ? -errno : 0;
}

int vv_is_mount_root(const char *path) {
    struct statx st;
    if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_BASIC_STATS, &st) < 0) return -errno;
    if (!(st.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)) return -ENOTSUP;
    return (st.stx_attributes & STATX_ATTR_MOUNT_ROOT) ? 1 : 0;
}

int vv_set_child_subreaper(int on) { return prctl(PR_SET_CHILD_SUBREAPER, on, 0, 0, 0) < 0 ? -errno : 0; }

int vv_epoll_create(void) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int vv_epoll_add(int epfd, int fd, uint64_t data) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | EPOLLHUP | EPOLLERR;
    ev.data.u64 = data;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int vv_epoll_add_once(int epfd, int fd, uint64_t data, int write) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = (write ? EPOLLOUT : EPOLLIN) | EPOLLHUP | EPOLLERR | EPOLLONESHOT;
    ev.data.u64 = data;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int vv_epoll_del(int epfd, int fd) { return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL) < 0 ? -errno : 0; }

int vv_epoll_wait(int epfd, uint64_t *datas, int max, int timeout_ms) {
    struct epoll_event evs[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) datas[i] = evs[i].data.u64;
    return n;
}

int vv_pipe(int fds[2]) {
    if (pipe2(fds, O_CLOEXEC) < 0) return -errno;
    int fl = fcntl(fds[0], F_GETFL);
    fcntl(fds[0], F_SETFL, fl | O_NONBLOCK);
    return 0;
}

#include <sys/vfs.h>
long vv_fs_type(const char *path) {
    struct statfs st;
    if (statfs(path, &st) < 0) return -errno;
    return (long)st.f_type;
}

#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>

int vv_set_nonblocking(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
    return 0;
}

int vv_pipe_pair(int fds[2]) { return pipe2(fds, O_CLOEXEC) < 0 ? -errno : 0; }

int vv_listen_unix(const char *path) {
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr.sun_path) return -ENAMETOOLONG;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -errno;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 1) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int vv_accept(int fd) {
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    return c < 0 ? -errno : c;
}

/* Receives one file descriptor passed with SCM_RIGHTS (the OCI console-socket protocol). */
int vv_recv_fd(int sock) {
    char data[256];
    struct iovec iov = {.iov_base = data, .iov_len = sizeof data};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = u.buf;
    msg.msg_controllen = sizeof u.buf;
    ssize_t n;
    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (c == NULL || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
        c->cmsg_len != CMSG_LEN(sizeof(int)))
        return -EBADMSG;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

int vv_set_winsize(int fd, unsigned short rows, unsigned short cols) {
    struct winsize ws;
    memset(&ws, 0, sizeof ws);
    ws.ws_row = rows;
    ws.ws_col = cols;
    return ioctl(fd, TIOCSWINSZ, &ws) < 0 ? -errno : 0;
}

int vv_get_winsize(int fd, unsigned short *rows, unsigned short *cols) {
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) < 0) return -errno;
    *rows = ws.ws_row;
    *cols = ws.ws_col;
    return 0;
}

int vv_open_in_root(int dirfd, const char *path, int flags, unsigned int mode) {
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (unsigned long long)flags | O_CLOEXEC;
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    return fd < 0 ? -errno : (int)fd;
}

void vv_set_fs_ids(unsigned uid, unsigned gid) {
    setfsuid(uid);
    setfsgid(gid);
}

struct vv_inflate {
    z_stream s;
};

vv_inflate *vv_inflate_new(int raw) {
    vv_inflate *z = calloc(1, sizeof *z);
    if (!z) return NULL;
    if (inflateInit2(&z->s, raw ? -15 : 15 + 32) != Z_OK) {
        free(z);
        return NULL;
    }
    return z;
}

int vv_inflate_step(vv_inflate *z, const unsigned char *in, size_t in_len, unsigned char *out, size_t out_cap,
                    size_t *consumed, size_t *produced) {
    z->s.next_in = (unsigned char *)in;
    z->s.avail_in = (uInt)in_len;
    z->s.next_out = out;
    z->s.avail_out = (uInt)out_cap;
    int rc = inflate(&z->s, Z_NO_FLUSH);
    *consumed = in_len - z->s.avail_in;
    *produced = out_cap - z->s.avail_out;
    if (rc == Z_STREAM_END) return 1;
    if (rc == Z_OK || rc == Z_BUF_ERROR) return 0;
    return -1;
}

unsigned long vv_crc32(const unsigned char *data, size_t len) {
    uLong crc = crc32(0L, Z_NULL, 0);
    while (len > 0) {
        uInt n = len > (1u << 30) ? (1u << 30) : (uInt)len;
        crc = crc32(crc, data, n);
        data += n;
        len -= n;
    }
    return crc;
}

void vv_inflate_free(vv_inflate *z) {
    if (!z) return;
    inflateEnd(&z->s);
    free(z);
}

struct vv_zstd {
    ZSTD_DStream *s;
};

vv_zstd *vv_zstd_new(void) {
    vv_zstd *z = calloc(1, sizeof *z);
    if (!z) return NULL;
    z->s = ZSTD_createDStream();
    // A frame may ask for at most a 128 MiB window: what the decoder allocates stays bounded.
    if (!z->s || ZSTD_isError(ZSTD_initDStream(z->s)) ||
        ZSTD_isError(ZSTD_DCtx_setParameter(z->s, ZSTD_d_windowLogMax, 27))) {
        if (z->s) ZSTD_freeDStream(z->s);
        free(z);
        return NULL;
    }
    return z;
}

int vv_zstd_step(vv_zstd *z, const unsigned char *in, size_t in_len, unsigned char *out, size_t out_cap,
                 size_t *consumed, size_t *produced) {
    ZSTD_inBuffer i = {in, in_len, 0};
    ZSTD_outBuffer o = {out, out_cap, 0};
    size_t rc = ZSTD_decompressStream(z->s, &o, &i);
    *consumed = i.pos;
    *produced = o.pos;
    if (ZSTD_isError(rc)) return -1;
    return rc == 0 ? 1 : 0;
}

void vv_zstd_free(vv_zstd *z) {
    if (!z) return;
    ZSTD_freeDStream(z->s);
    free(z);
}

// MARK: Loop devices and btrfs

int vv_loop_attach(int image_fd, int *number) {
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0) return -errno;
    int err = EBUSY;
    // Another process may take the free device between GET_FREE and CONFIGURE: try again.
    for (int attempt = 0; attempt < 16; attempt++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0) {
            err = errno;
            break;
        }
        char path[32];
        snprintf(path, sizeof path, "/dev/loop%d", n);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            err = errno;
            break;
        }
        struct loop_config c;
        memset(&c, 0, sizeof c);
        c.fd = (unsigned int)image_fd;
        c.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        if (ioctl(fd, LOOP_CONFIGURE, &c) == 0) {
            close(ctl);
            *number = n;
            return fd;
        }
        err = errno;
        close(fd);
        if (err != EBUSY) break;
    }
    close(ctl);
    return -err;
}

int vv_fallocate(int fd, int64_t len) { return fallocate(fd, 0, 0, (off_t)len) < 0 ? -errno : 0; }

int vv_btrfs_quota_enable(int fd) {
    struct btrfs_ioctl_quota_ctl_args a;
    memset(&a, 0, sizeof a);
    a.cmd = BTRFS_QUOTA_CTL_ENABLE;
    return ioctl(fd, BTRFS_IOC_QUOTA_CTL, &a) < 0 ? -errno : 0;
}

int vv_btrfs_subvol_create(int dirfd, const char *name) {
    struct btrfs_ioctl_vol_args a;
    memset(&a, 0, sizeof a);
    if (strlen(name) >= sizeof a.name) return -ENAMETOOLONG;
    strcpy(a.name, name);
    return ioctl(dirfd, BTRFS_IOC_SUBVOL_CREATE, &a) < 0 ? -errno : 0;
}

int vv_btrfs_subvol_id(int fd, uint64_t *id) {
    struct btrfs_ioctl_ino_lookup_args a;
    memset(&a, 0, sizeof a);
    a.treeid = 0;
    a.objectid = BTRFS_FIRST_FREE_OBJECTID;
    if (ioctl(fd, BTRFS_IOC_INO_LOOKUP, &a) < 0) return -errno;
    *id = a.treeid;
    return 0;
}

int vv_btrfs_qgroup_limit(int subvol_fd, uint64_t max_referenced) {
    struct btrfs_ioctl_qgroup_limit_args a;
    memset(&a, 0, sizeof a);
    a.qgroupid = 0;  // the qgroup of the subvolume the fd is in
    a.lim.flags = BTRFS_QGROUP_LIMIT_MAX_RFER;
    a.lim.max_rfer = max_referenced == 0 ? (uint64_t)-1 : max_referenced;
    return ioctl(subvol_fd, BTRFS_IOC_QGROUP_LIMIT, &a) < 0 ? -errno : 0;
}

int vv_btrfs_subvol_destroy(int dirfd, const char *name) {
    struct btrfs_ioctl_vol_args a;
    memset(&a, 0, sizeof a);
    if (strlen(name) >= sizeof a.name) return -ENAMETOOLONG;
    strcpy(a.name, name);
    return ioctl(dirfd, BTRFS_IOC_SNAP_DESTROY, &a) < 0 ? -errno : 0;
}

int vv_btrfs_qgroup_remove(int fd, uint64_t id) {
    struct btrfs_ioctl_qgroup_create_args a;
    memset(&a, 0, sizeof a);
    a.create = 0;
    a.qgroupid = id;
    return ioctl(fd, BTRFS_IOC_QGROUP_CREATE, &a) < 0 ? -errno : 0;
}

int vv_btrfs_sync(int fd) { return ioctl(fd, BTRFS_IOC_SYNC, NULL) < 0 ? -errno : 0; }

static uint64_t le64_at(const char *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return le64toh(v);
}

int vv_btrfs_qgroups(int fd, uint64_t *ids, uint64_t *referenced, uint64_t *exclusive, int max) {
    struct btrfs_ioctl_search_args a;
    int count = 0;
    uint64_t next = 0;
    for (;;) {
        memset(&a, 0, sizeof a);
        a.key.tree_id = BTRFS_QUOTA_TREE_OBJECTID;
        a.key.min_objectid = 0;
        a.key.max_objectid = 0;
        a.key.min_type = BTRFS_QGROUP_INFO_KEY;
        a.key.max_type = BTRFS_QGROUP_INFO_KEY;
        a.key.min_offset = next;
        a.key.max_offset = (1ULL << 48) - 1;  // level 0: the subvolumes' own qgroups
        a.key.max_transid = (uint64_t)-1;
        a.key.nr_items = 4096;
        if (ioctl(fd, BTRFS_IOC_TREE_SEARCH, &a) < 0) return -errno;
        if (a.key.nr_items == 0) return count;
        size_t off = 0;
        for (uint32_t i = 0; i < a.key.nr_items; i++) {
            struct btrfs_ioctl_search_header h;
            memcpy(&h, a.buf + off, sizeof h);
            off += sizeof h;
            if (h.type == BTRFS_QGROUP_INFO_KEY && h.len >= 40) {
                if (count == max) return count;
                ids[count] = h.offset;
                // struct btrfs_qgroup_info_item: generation, rfer, rfer_cmpr, excl, excl_cmpr (le64)
                referenced[count] = le64_at(a.buf + off + 8);
                exclusive[count] = le64_at(a.buf + off + 24);
                count++;
            }
            off += h.len;
            next = h.offset + 1;
        }
        if (next == 0 || next >= (1ULL << 48)) return count;
    }
}

int vv_btrfs_subvol_exists(int fd, uint64_t id) {
    struct btrfs_ioctl_search_args a;
    memset(&a, 0, sizeof a);
    a.key.tree_id = BTRFS_ROOT_TREE_OBJECTID;
    a.key.min_objectid = id;
    a.key.max_objectid = id;
    a.key.min_type = BTRFS_ROOT_ITEM_KEY;
    a.key.max_type = BTRFS_ROOT_ITEM_KEY;
    a.key.min_offset = 0;
    a.key.max_offset = (uint64_t)-1;
    a.key.max_transid = (uint64_t)-1;
    a.key.nr_items = 1;
    if (ioctl(fd, BTRFS_IOC_TREE_SEARCH, &a) < 0) return -errno;
    return a.key.nr_items > 0 ? 1 : 0;
}
