import Foundation
import Glibc
import VivariumCore
import VivariumOCI

/// Builds the hardened OCI configuration of a sandbox (DESIGN.md, "The hardened sandbox").
public struct HardenedSpec: Sendable {
    /// Where the static init is bind-mounted inside every sandbox.
    public static let initPath = "/dev/init"
    public static let idRangeSize: Int64 = 65536

    /// The capability set of uid 0 in a sandbox. Absent on purpose: SYS_ADMIN, NET_ADMIN, NET_RAW,
    /// SYS_PTRACE, SYS_MODULE, DAC_READ_SEARCH, MKNOD, SETFCAP, SYS_TIME, SYS_BOOT, SYS_RAWIO and the rest.
    public static let capabilities = [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID",
        "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_AUDIT_WRITE",
    ]

    public static let maskedPaths = [
        "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
        "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
        // The host's kernel command line (it names the host's vsock ports) and its crash-dump layout.
        "/proc/cmdline", "/sys/kernel/vmcoreinfo",
    ]
    /// The devices cgroup (v1; crun turns it into an eBPF program on v2): everything denied, then the OCI
    /// default set (null, zero, full, random, urandom, tty, console, ptmx, ptys) and mknod of any node,
    /// which the user namespace refuses anyway.
    public static let devices: [RuntimeSpec.DeviceRule] =
        [
            .init(allow: false, access: "rwm"), .init(allow: true, type: "c", access: "m"),
            .init(allow: true, type: "b", access: "m"),
        ]
        + [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)].map {
            .init(allow: true, type: "c", major: $0.0, minor: $0.1, access: "rwm")
        } + [.init(allow: true, type: "c", major: 136, access: "rwm")]
    public static let readonlyPaths = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

    public static let defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    public var hostname: String
    public var rootfs: String
    public var readOnly: Bool
    public var hostUIDBase: Int64
    public var limits: ResourceLimits
    public var cgroupsPath: String
    public var initBinary: String
    public var swapAccounting: Bool
    /// Mounts added after the hardened ones (a secrets tmpfs, for one).
    public var extraMounts: [RuntimeSpec.Mount]
    /// The OOM score adjustment every process of the box starts with (see `RuntimeLayout`).
    public var oomScoreAdjust: Int

    public init(
        hostname: String, rootfs: String, readOnly: Bool, hostUIDBase: Int64, limits: ResourceLimits,
        cgroupsPath: String, initBinary: String, swapAccounting: Bool,
        extraMounts: [RuntimeSpec.Mount] = [], oomScoreAdjust: Int = 0
    ) {
        self.extraMounts = extraMounts
        self.oomScoreAdjust = oomScoreAdjust
        self.hostname = hostname
        self.rootfs = rootfs
        self.readOnly = readOnly
        self.hostUIDBase = hostUIDBase
        self.limits = limits
        self.cgroupsPath = cgroupsPath
        self.initBinary = initBinary
        self.swapAccounting = swapAccounting
    }

    public func build() -> RuntimeSpec {
        let map = [
            RuntimeSpec.IDMapping(containerID: 0, hostID: UInt32(hostUIDBase), size: UInt32(Self.idRangeSize))
        ]
        let quota = limits.milliCPUs * 100
        return RuntimeSpec(
            process: Self.process(
                args: [Self.initPath], env: [:], cwd: "/", uid: 0, gid: 0, oomScoreAdjust: oomScoreAdjust),
            root: .init(path: rootfs, readonly: readOnly),
            hostname: hostname,
            mounts: [
                .init(destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"]),
                .init(
                    destination: "/dev", type: "tmpfs", source: "tmpfs",
                    options: ["nosuid", "strictatime", "mode=755", "size=65536k"]),
                .init(
                    destination: "/dev/pts", type: "devpts", source: "devpts",
                    options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]),
                .init(
                    destination: "/dev/shm", type: "tmpfs", source: "shm",
                    options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]),
                .init(
                    destination: "/dev/mqueue", type: "mqueue", source: "mqueue",
                    options: ["nosuid", "noexec", "nodev"]),
                .init(
                    destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"]),
                .init(destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777"]),
                .init(destination: "/run", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=755"]),
                .init(
                    destination: Self.initPath, type: "bind", source: initBinary,
                    options: ["bind", "ro", "nosuid", "nodev"]),
            ] + extraMounts,
            linux: .init(
                uidMappings: map, gidMappings: map,
                namespaces: ["pid", "network", "ipc", "uts", "mount", "user", "cgroup"].map { .init(type: $0) },
                cgroupsPath: cgroupsPath,
                resources: .init(
                    memory: .init(
                        limit: limits.memoryBytes, swap: swapAccounting ? limits.memoryBytes : nil,
                        swappiness: swapAccounting ? nil : 0),
                    cpu: .init(quota: quota, period: 100_000),
                    pids: .init(limit: limits.pids), devices: Self.devices),
                seccomp: Self.seccomp,
                maskedPaths: Self.maskedPaths,
                readonlyPaths: Self.readonlyPaths, sysctl: Self.sysctl))
    }

    /// Set in the box's own network namespace: ping works through ICMP datagram sockets without
    /// CAP_NET_RAW for every group of the box (as Docker does; only mapped gids are accepted), and interfaces made after the box's creation (its `eth0`) have no
    /// IPv6, so no IPv6 path can go around the egress policy (the bridge ruleset drops IPv6 frames too);
    /// loopback keeps ::1.
    static let sysctl = [
        "net.ipv4.ping_group_range": "0 \(idRangeSize - 1)", "net.ipv6.conf.default.disable_ipv6": "1",
    ]

    /// The process of the init or of an exec: the same capabilities (none effective for a non-root
    /// user), no_new_privs and limits either way.
    public static func process(
        args: [String], env: [String: String], cwd: String, uid: UInt32, gid: UInt32,
        terminal: RuntimeSpec.ConsoleSize? = nil, oomScoreAdjust: Int = 0
    ) -> RuntimeSpec.Process {
        var envList = [defaultPath, "HOME=/root"]
        for (k, v) in env.sorted(by: { $0.key < $1.key }) {
            envList.removeAll { $0.hasPrefix(k + "=") }
            envList.append("\(k)=\(v)")
        }
        let effective = uid == 0 ? capabilities : []
        if terminal != nil { envList.append("TERM=xterm") }
        return .init(
            terminal: terminal != nil, consoleSize: terminal, user: .init(uid: uid, gid: gid), args: args,
            env: envList, cwd: cwd,
            capabilities: .init(bounding: capabilities, effective: effective, permitted: effective),
            rlimits: [.init(type: "RLIMIT_NOFILE", hard: nofile, soft: nofile)],
            oomScoreAdj: oomScoreAdjust)
    }

    /// Open files per process: 65536, or the daemon's own hard limit when that is lower (raising it
    /// needs CAP_SYS_RESOURCE on the host, which a sandbox never has).
    static let nofile: UInt64 = {
        var rl = rlimit()
        guard getrlimit(RLIMIT_NOFILE_VALUE, &rl) == 0 else { return 1024 }
        return min(65536, UInt64(rl.rlim_max))
    }()

    /// Socket families a sandbox may use: AF_UNIX 1, AF_INET 2, AF_INET6 10, AF_NETLINK 16.
    public static let allowedSocketFamilies: Set<UInt64> = [1, 2, 10, 16]
    static let maxAllowedSocketFamily: UInt64 = 16
    /// The families below the highest allowed one that are refused (AF_VSOCK, 40, and the others above
    /// 16 are refused by one rule).
    static let refusedSocketFamilies: [UInt64] = (0...maxAllowedSocketFamily).filter {
        !allowedSocketFamilies.contains($0)
    }

    /// Default-allow with a deny list of the calls a sandbox never needs and that widen the kernel's
    /// attack surface. clone3 answers ENOSYS so that libc falls back to clone, whose namespace flags
    /// can be filtered (clone3 passes them in memory, out of seccomp's reach).
    public static let seccomp: RuntimeSpec.Seccomp = {
        let eperm: UInt32 = 1
        let denied = [
            "mount", "umount", "umount2", "pivot_root", "unshare", "setns", "fsopen", "fsconfig", "fsmount", "fspick",
            "move_mount", "open_tree", "mount_setattr", "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
            "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "kexec_load", "kexec_file_load", "init_module",
            "finit_module", "delete_module", "create_module", "open_by_handle_at", "name_to_handle_at",
            "userfaultfd", "swapon", "swapoff", "reboot", "acct", "quotactl", "quotactl_fd", "lookup_dcookie",
            "iopl", "ioperm", "uselib", "vhangup", "io_uring_setup", "io_uring_enter", "io_uring_register",
            "syslog", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "nfsservctl",
        ]
        var rules = [RuntimeSpec.SyscallRule(names: denied, action: "SCMP_ACT_ERRNO", errnoRet: eperm, args: nil)]
        rules.append(.init(names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38, args: nil))
        let namespaceFlags: [UInt64] = [
            0x0002_0000,  // CLONE_NEWNS
            0x0200_0000,  // CLONE_NEWCGROUP
            0x0400_0000,  // CLONE_NEWUTS
            0x0800_0000,  // CLONE_NEWIPC
            0x1000_0000,  // CLONE_NEWUSER
            0x2000_0000,  // CLONE_NEWPID
            0x4000_0000,  // CLONE_NEWNET
        ]
        for flag in namespaceFlags {
            rules.append(
                .init(
                    names: ["clone"], action: "SCMP_ACT_ERRNO", errnoRet: eperm,
                    args: [.init(index: 0, value: flag, valueTwo: flag, op: "SCMP_CMP_MASKED_EQ")]))
        }
        // Sockets only of the families a sandbox has a use for: unix, inet, inet6 and netlink (for its
        // own network namespace). Everything else (vsock, which would reach the host and the
        // hypervisor past the network namespace; packet, alg, key, bluetooth, ...) answers
        // EAFNOSUPPORT. socketcall, the 32-bit multiplexer whose arguments seccomp cannot see, is off.
        let eafnosupport: UInt32 = 97
        for family in Self.refusedSocketFamilies {
            rules.append(
                .init(
                    names: ["socket", "socketpair"], action: "SCMP_ACT_ERRNO", errnoRet: eafnosupport,
                    args: [.init(index: 0, value: family, valueTwo: 0, op: "SCMP_CMP_EQ")]))
        }
        rules.append(
            .init(
                names: ["socket", "socketpair"], action: "SCMP_ACT_ERRNO", errnoRet: eafnosupport,
                args: [.init(index: 0, value: Self.maxAllowedSocketFamily + 1, valueTwo: 0, op: "SCMP_CMP_GE")]))
        rules.append(.init(names: ["socketcall"], action: "SCMP_ACT_ERRNO", errnoRet: 38, args: nil))
        #if arch(arm64)
            let arches = ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
        #else
            let arches = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        #endif
        return .init(defaultAction: "SCMP_ACT_ALLOW", architectures: arches, syscalls: rules)
    }()
}

private let RLIMIT_NOFILE_VALUE = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
