#ifndef VIVARIUM_OS_H
#define VIVARIUM_OS_H

#include <stdint.h>
#include <sys/types.h>

#include "vivarium_nftables.h"
#include "vivarium_rtnetlink.h"

/// Flags for vv_spawn.
/// Run the child in a private mount namespace with /sys/fs/cgroup/unified detached, so that
/// crun on a hybrid cgroup host sees a pure v1 layout.
#define VV_SPAWN_HIDE_CGROUP2 1
/// Write `oom_score_adj` to the child's /proc/self/oom_score_adj before exec (a vfork child's write
/// stays its own: the kernel does not carry it to the parent sharing the memory).
#define VV_SPAWN_OOM_SCORE 2

typedef struct {
    const char *path;
    char *const *argv;
    char *const *envp;
    int stdin_fd;   ///< -1: /dev/null
    int stdout_fd;  ///< -1: /dev/null
    int stderr_fd;  ///< -1: /dev/null
    int flags;
    int oom_score_adj;
} vv_spawn_attr;

/// Spawns a process (clone with CLONE_VFORK|CLONE_VM|CLONE_PIDFD). On success returns 0 and sets
/// *pid and *pidfd; on failure returns -errno (including errors of the child before exec).
int vv_spawn(const vv_spawn_attr *attr, pid_t *pid, int *pidfd);

/// Non-blocking reap of an exited child through its pidfd. Returns 1 and fills code/killed when it
/// was reaped, 0 when it has not exited, -errno on error (-ECHILD: not our child).
int vv_pidfd_reap(int pidfd, int *code, int *signaled);
/// The pid of an exited child still waiting to be reaped, left unreaped (waitid P_ALL, WNOWAIT); 0 for none.
int vv_peek_exited_child(void);
/// Reaps the exited child `pid` (waitid P_PID, WNOHANG).
int vv_reap_pid(pid_t pid);

int vv_pidfd_open(pid_t pid);
int vv_pidfd_send_signal(int pidfd, int sig);

/// Creates a user namespace with the given id maps ("inside outside count" lines) and returns an
/// O_CLOEXEC fd to it, or -errno.
int vv_userns_fd(const char *uid_map, const char *gid_map);

/// open_tree(OPEN_TREE_CLONE) of src, idmapped through userns_fd (and read-only when readonly != 0),
/// then move_mount onto target. Returns 0 or -errno.
int vv_idmapped_bind(const char *src, const char *target, int userns_fd, int readonly);

int vv_mount(const char *source, const char *target, const char *fstype, unsigned long flags,
             const char *data);
int vv_umount(const char *target, int detach);
/// 1 when `path` is the root of a mount (statx STATX_ATTR_MOUNT_ROOT), 0 when not, -errno on failure.
int vv_is_mount_root(const char *path);

int vv_set_child_subreaper(int on);

int vv_epoll_create(void);
int vv_epoll_add(int epfd, int fd, uint64_t data);
int vv_epoll_del(int epfd, int fd);
/// Waits for events; fills datas with the data of each ready fd. Returns the count or -errno.
int vv_epoll_wait(int epfd, uint64_t *datas, int max, int timeout_ms);


/// A pipe, both ends O_CLOEXEC, the read end non-blocking. Returns 0 or -errno.
int vv_pipe(int fds[2]);
/// A pipe, both ends O_CLOEXEC and blocking. Returns 0 or -errno.
int vv_pipe_pair(int fds[2]);
int vv_set_nonblocking(int fd);

/// Registers fd for one readability (or, with write, writability) event: EPOLLONESHOT. 0 or -errno.
int vv_epoll_add_once(int epfd, int fd, uint64_t data, int write);

/// A non-blocking listening unix socket at path (replacing a stale one). Returns the fd or -errno.
int vv_listen_unix(const char *path);
/// accept4 with SOCK_CLOEXEC. Returns the fd or -errno (-EAGAIN: nothing to accept yet).
int vv_accept(int fd);
/// Receives one fd sent with SCM_RIGHTS. Returns it (O_CLOEXEC) or -errno.
int vv_recv_fd(int sock);
/// Sets a terminal's window size (TIOCSWINSZ). Returns 0 or -errno.
int vv_set_winsize(int fd, unsigned short rows, unsigned short cols);
/// Reads a terminal's window size (TIOCGWINSZ). Returns 0 or -errno.
int vv_get_winsize(int fd, unsigned short *rows, unsigned short *cols);

/// statfs f_type of path, or -errno.
long vv_fs_type(const char *path);

/// Opens `path` below the directory `dirfd` as if `dirfd` were the root (openat2 with
/// RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS): no "..", absolute path or symlink gets out. Returns the
/// fd or -errno.
int vv_open_in_root(int dirfd, const char *path, int flags, unsigned int mode);

/// Sets the calling thread's file-system ids (setfsuid and setfsgid act on one thread).
void vv_set_fs_ids(unsigned uid, unsigned gid);

/// A streaming gzip/zlib decompressor (zlib's inflate with automatic header detection).
typedef struct vv_inflate vv_inflate;
/// `raw`: a bare deflate stream (as a zip member holds), else gzip or zlib by its header.
vv_inflate *vv_inflate_new(int raw);
/// The CRC-32 of `data` (zip's and gzip's).
unsigned long vv_crc32(const unsigned char *data, size_t len);
/// Decompresses from `in` into `out`: returns 0 while more input is wanted, 1 at the end of the
/// stream, -1 on corrupt input; `consumed` and `produced` say how many bytes moved.
int vv_inflate_step(vv_inflate *z, const unsigned char *in, size_t in_len, unsigned char *out, size_t out_cap,
                    size_t *consumed, size_t *produced);
void vv_inflate_free(vv_inflate *z);

/// A streaming zstd decompressor (frames one after another; windows of at most 128 MiB).
typedef struct vv_zstd vv_zstd;
vv_zstd *vv_zstd_new(void);
/// Returns 1 when the input consumed ends a frame, 0 when more is needed, -1 on corrupt input.
int vv_zstd_step(vv_zstd *z, const unsigned char *in, size_t in_len, unsigned char *out, size_t out_cap,
                 size_t *consumed, size_t *produced);
void vv_zstd_free(vv_zstd *z);

/// Attaches the file open at image_fd to a free loop device (LOOP_CTL_GET_FREE + LOOP_CONFIGURE) with
/// LO_FLAGS_AUTOCLEAR: the device detaches when its last user (the mount) goes. Returns an O_CLOEXEC fd
/// of the device and sets *number, or -errno. Keep the fd open until the device is mounted.
int vv_loop_attach(int image_fd, int *number);

/// Allocates len bytes of fd's file for real (fallocate mode 0: no holes). Returns 0 or -errno.
int vv_fallocate(int fd, int64_t len);

/// Btrfs, through ioctls on an fd of a directory of the file system. Each returns 0 (or a count) or -errno.
/// Enables quotas (qgroups) on the file system.
int vv_btrfs_quota_enable(int fd);
/// Creates the subvolume `name` in the directory dirfd.
int vv_btrfs_subvol_create(int dirfd, const char *name);
/// The id (tree id) of the subvolume holding fd.
int vv_btrfs_subvol_id(int fd, uint64_t *id);
/// Sets the referenced-bytes limit of the qgroup of the subvolume open at subvol_fd (0: none).
int vv_btrfs_qgroup_limit(int subvol_fd, uint64_t max_referenced);
/// Deletes the subvolume `name` in the directory dirfd (its data is freed by the kernel later).
int vv_btrfs_subvol_destroy(int dirfd, const char *name);
/// Removes the qgroup 0/id.
int vv_btrfs_qgroup_remove(int fd, uint64_t id);
/// Commits the current transaction (BTRFS_IOC_SYNC).
int vv_btrfs_sync(int fd);
/// Level-0 qgroups with their referenced and exclusive bytes, up to max. Returns the count or -errno.
int vv_btrfs_qgroups(int fd, uint64_t *ids, uint64_t *referenced, uint64_t *exclusive, int max);
/// 1 when a subvolume with this id exists (its root item is in the root tree), 0 when not, or -errno.
int vv_btrfs_subvol_exists(int fd, uint64_t id);

#endif
