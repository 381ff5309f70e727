import Foundation
import Glibc
import Logging
import Synchronization
import VivariumCore
import VivariumOCI
import VivariumOS

/// What the host needs to know to run one sandbox, as the engine describes it.
public struct BoxPlan: Sendable {
    public var id: SandboxID
    public var hostname: String
    /// The sandbox's directory on disk: the mount points of its root, its upper (its disk) and work dirs.
    /// Its runtime spec, which holds environment values, is on the daemon's tmpfs instead (`specsDir`).
    public var bundle: String
    /// Relative to each cgroup hierarchy (`/vivarium-<instance>/<id>`).
    public var cgroupPath: String
    /// The image's read-only root file system on the host.
    public var imageRootfs: String
    /// The host uid (and gid) that is root inside.
    public var uidBase: Int64
    public var limits: ResourceLimits
    /// The sandbox's environment, values included: only the plans of `boot` and `adopt` carry it. Every
    /// exec starts from it; the init (which only reaps) runs without it, so that no value is in the
    /// runtime spec crun keeps a copy of.
    public var env: [String: String]
    public var readOnly: Bool
    /// Mounts added to the hardened spec (the box's `/run/secrets`, for one).
    public var extraMounts: [RuntimeSpec.Mount]

    public init(
        id: SandboxID, hostname: String, bundle: String, cgroupPath: String, imageRootfs: String, uidBase: Int64,
        limits: ResourceLimits, env: [String: String], readOnly: Bool, extraMounts: [RuntimeSpec.Mount] = []
    ) {
        self.id = id
        self.hostname = hostname
        self.bundle = bundle
        self.cgroupPath = cgroupPath
        self.imageRootfs = imageRootfs
        self.uidBase = uidBase
        self.limits = limits
        self.env = env
        self.readOnly = readOnly
        self.extraMounts = extraMounts
    }

    public var lowerMount: String { bundle + "/lower" }
    public var rootfsMount: String { bundle + "/rootfs" }
    public var upperDir: String { bundle + "/upper" }
    public var workDir: String { bundle + "/work" }
}

/// What the engine hears of a sandbox's init exiting without being asked to.
public typealias InitExitHandler = @Sendable (_ id: SandboxID, _ pid: Int32, _ status: ExitStatus?) -> Void

/// The host side of sandboxes, as the engine drives it. `HostRuntime` is the real one; tests of the
/// engine's decisions use a fake.
public protocol SandboxRuntime: Sendable {
    /// The directories of a new sandbox, owned by its id range.
    func prepare(_ plan: BoxPlan) throws
    /// Mounts the root, writes the hardened bundle, creates the container, plugs the network in and starts
    /// it. Returns the init's host pid; `onExit` hears of an exit nobody asked for.
    func boot(_ plan: BoxPlan, network: (any NetworkAttachment)?, onExit: @escaping InitExitHandler) async throws
        -> Int32
    /// Takes a container found running at start back into the runtime's care. False when its init is not
    /// alive or its root is not mounted (it cannot be used).
    func adopt(_ plan: BoxPlan, pid: Int32, network: (any NetworkAttachment)?, onExit: @escaping InitExitHandler)
        async -> Bool
    /// TERM, then KILL after `grace`, then `release`.
    func halt(_ plan: BoxPlan, pid: Int32?, grace: Duration?) async throws
    /// Deletes the container, its cgroups and mounts; keeps the directories (the upper dir is its disk).
    func release(_ plan: BoxPlan) async throws
    /// Everything the sandbox holds on the host, its directories included.
    func destroy(_ plan: BoxPlan, released: Bool) async throws
    /// Starts a command in a running sandbox.
    func start(_ plan: BoxPlan, _ command: ExecCommand, terminal: RuntimeSpec.ConsoleSize?, stdin: Bool)
        async throws -> ExecSession
    /// Starts a command detached: its shim keeps it and its output (at most `maxOutputBytes`).
    func detach(_ plan: BoxPlan, _ command: ExecCommand, stdin: Bool, maxOutputBytes: Int) async throws
        -> DetachedProcess
    /// The sandbox's detached processes, oldest first.
    func processes(_ plan: BoxPlan) -> [DetachedProcess]
    /// Bytes in the sandbox's writable layer.
    func diskUsage(_ plan: BoxPlan) async -> Int64
    /// True while the sandbox is being stopped on purpose (its init's exit is expected).
    func isStopping(_ id: SandboxID) -> Bool
    /// The containers this instance's OCI runtime knows.
    func containers() async throws -> [ContainerState]
    /// Whether a sandbox's init is alive (not gone, not a zombie).
    func isAlive(pid: Int32) -> Bool
    /// Whether anything is mounted in the sandbox's directory.
    func holdsMounts(_ plan: BoxPlan) -> Bool
    /// Removes every container, bundle and cgroup of this instance whose id is not in `live`.
    func removeOrphans(live: Set<String>) async -> Int
}

extension SandboxRuntime {
    /// Runs a command to its end and returns its capped output (see `ExecSession.outcome`).
    public func exec(_ plan: BoxPlan, _ command: ExecCommand) async throws -> ExecOutcome {
        try await start(plan, command, terminal: nil, stdin: false).outcome(
            timeout: command.timeout, limit: command.maxOutputBytes)
    }
}

/// Where a `HostRuntime` keeps things and how it runs them.
public struct RuntimeLayout: Sendable {
    public var sandboxesDir: String
    /// On a tmpfs: each sandbox's runtime spec and exec process files (they hold environment values,
    /// which must never reach a disk).
    public var specsDir: String
    public var trashDir: String
    /// The cgroup below which every sandbox of this instance lives (`vivarium-<instance>`).
    public var cgroupParent: String
    /// The installed sandbox init, bind-mounted at /dev/init.
    public var initBinary: String
    /// The installed keeper of detached commands (`vivarium-shim`).
    public var shimBinary: String
    public var stopTimeout: Duration
    /// The OOM score adjustment of every sandbox process: 0 when the daemon runs at -1000, higher when
    /// the host refused the daemon that (no CAP_SYS_RESOURCE), so that a box is still taken first.
    public var oomScoreAdjust: Int

    public init(
        sandboxesDir: String, specsDir: String, trashDir: String, cgroupParent: String, initBinary: String,
        shimBinary: String = "/nonexistent/vivarium-shim", stopTimeout: Duration, oomScoreAdjust: Int = 0
    ) {
        self.shimBinary = shimBinary
        self.specsDir = specsDir
        self.oomScoreAdjust = oomScoreAdjust
        self.sandboxesDir = sandboxesDir
        self.trashDir = trashDir
        self.cgroupParent = cgroupParent
        self.initBinary = initBinary
        self.stopTimeout = stopTimeout
    }
}

/// What a running sandbox owns on the host, for as long as it runs: its init, the idle cgroups its
/// execs reuse, whether it is being stopped on purpose, its network, the cached size of its disk.
final class RunningBox: Sendable {
    let pid: Int32
    let stopping = Atomic<Bool>(false)
    let idleExecCgroups = Mutex<[Cgroup]>([])
    let network: (any NetworkAttachment)?
    let diskUsage = Mutex<(bytes: Int64, at: ContinuousClock.Instant)?>(nil)
    /// The init's environment, which every exec starts from.
    let env: [String: String]

    init(pid: Int32, network: (any NetworkAttachment)?, env: [String: String]) {
        self.pid = pid
        self.network = network
        self.env = env
    }
}

/// The real host side: the idmapped root and its overlay, the hardened bundle, crun, cgroups, exec
/// sessions and teardown. Bundles of deleted sandboxes go to a trash that `emptyTrash` clears off the
/// request path.
public final class HostRuntime: SandboxRuntime {
    let layout: RuntimeLayout
    let oci: any OCIRuntime
    public let cgroups: CgroupHost
    /// Where writable layers get their disk quota; nil when the operator turned the pool off.
    public let pool: (any DiskQuotas)?
    let logger: Logger
    let trash: Trash
    public let trashed = WakeSignal()
    /// The sandboxes running on this host, by id: each one's own state.
    let running = Mutex<[SandboxID: RunningBox]>([:])
    /// Disk usage is walked at most this often per sandbox (a walk is O(files)).
    static let diskUsageTTL = Duration.seconds(5)

    public init(
        layout: RuntimeLayout, oci: any OCIRuntime, cgroups: CgroupHost, pool: (any DiskQuotas)? = nil, logger: Logger
    ) throws {
        self.pool = pool
        self.layout = layout
        self.oci = oci
        self.cgroups = cgroups
        self.logger = logger
        trash = try Trash(dir: layout.trashDir)
        if !cgroups.swapAccounting {
            logger.warning("swap is not accounted on this host: sandboxes get swappiness 0 instead of a swap limit")
        }
    }

    func box(_ id: SandboxID) -> RunningBox? { running.withLock { $0[id] } }

    public func isStopping(_ id: SandboxID) -> Bool { box(id)?.stopping.load(ordering: .relaxed) ?? false }

    public func prepare(_ p: BoxPlan) throws {
        // Only root and the sandbox's own id range may enter its bundle: the upper dir and the mounted
        // root inside hold the tenant's files.
        let base = p.uidBase
        try FileSystem.makeDirectory(p.bundle, mode: 0o710, owner: (0, gid_t(base)))
        try FileSystem.makeDirectory(p.lowerMount, mode: 0o755)
        try FileSystem.makeDirectory(p.rootfsMount, mode: 0o755)
        // With a pool, the upper and work dirs are in the sandbox's own subvolume, under its disk quota.
        let disk = try pool.map { try $0.create(p.id, limitBytes: p.limits.diskBytes) }
        let (upper, work) = disk.map { ($0 + "/upper", $0 + "/work") } ?? (p.upperDir, p.workDir)
        if let disk { try FileSystem.makeDirectory(disk, mode: 0o700) }
        try FileSystem.makeDirectory(upper, mode: 0o755, owner: (uid_t(base), gid_t(base)))
        try FileSystem.makeDirectory(work, mode: 0o700, owner: (uid_t(base), gid_t(base)))
    }

    /// The sandbox's runtime bundle: its config.json, the init's pid file and exec process files, on the
    /// tmpfs. crun reads the root from config.json's absolute path, on disk.
    func specDir(_ id: SandboxID) -> String { layout.specsDir + "/" + id.rawValue }

    /// The sandbox's upper and work dirs: in its pool volume, or in its bundle (no pool, or a sandbox made
    /// before there was one).
    func layers(_ p: BoxPlan) -> (upper: String, work: String) {
        if let d = pool?.directory(p.id) { return (d + "/upper", d + "/work") }
        return (p.upperDir, p.workDir)
    }

    public func boot(_ p: BoxPlan, network: (any NetworkAttachment)?, onExit: @escaping InitExitHandler)
        async throws -> Int32
    {
        // One statx per mount point: reading the host's mount table would cost O(sandboxes).
        if !Mounts.isMountRoot(p.rootfsMount) {
            if !Mounts.isMountRoot(p.lowerMount) {
                let userns = try UserNamespace(base: p.uidBase, size: HardenedSpec.idRangeSize)
                try Mounts.idmappedBind(source: p.imageRootfs, target: p.lowerMount, userns: userns, readOnly: true)
            }
            let (upper, work) = layers(p)
            try Mounts.overlay(lower: p.lowerMount, upper: upper, work: work, target: p.rootfsMount)
        }
        let spec = HardenedSpec(
            hostname: p.hostname, rootfs: p.rootfsMount, readOnly: p.readOnly, hostUIDBase: p.uidBase,
            limits: p.limits, cgroupsPath: p.cgroupPath, initBinary: layout.initBinary,
            swapAccounting: cgroups.swapAccounting, extraMounts: p.extraMounts,
            oomScoreAdjust: layout.oomScoreAdjust
        ).build()
        let specs = specDir(p.id)
        try FileSystem.makeDirectory(specs, mode: 0o700)
        try FileSystem.makeDirectory(specs + "/exec", mode: 0o700)
        try FileSystem.writeAtomically(try JSONEncoder().encode(spec), to: specs + "/config.json", durable: false)
        let pid = try await oci.create(id: p.id.rawValue, bundle: specs)
        let box = RunningBox(pid: pid, network: network, env: p.env)
        running.withLock { $0[p.id] = box }
        guard watch(p.id, box, onExit) else {
            throw VivariumError(.runtimeFailure, "the sandbox's init is gone or cannot be watched")
        }
        try await network?.attach(initPid: pid)
        try await oci.start(id: p.id.rawValue)
        return pid
    }

    public func adopt(
        _ p: BoxPlan, pid: Int32, network: (any NetworkAttachment)?, onExit: @escaping InitExitHandler
    ) async -> Bool {
        guard processAlive(pid), Mounts.isMountRoot(p.rootfsMount) else { return false }
        let box = RunningBox(pid: pid, network: network, env: p.env)
        try? FileSystem.makeDirectory(specDir(p.id) + "/exec", mode: 0o700)
        running.withLock { $0[p.id] = box }
        // Attached again: what the host lost while the daemon was away (its ruleset, a veth) comes back. A
        // failure leaves the sandbox without a verdict in the ruleset, where all it sends is dropped.
        do { try await network?.attach(initPid: pid) } catch {
            logger.error(
                "cannot attach an adopted sandbox's network", metadata: ["id": "\(p.id)", "error": "\(error)"])
        }
        // Exec cgroups an earlier daemon left empty are pruned; ones still holding processes stay.
        for dir in cgroups.directories(p.cgroupPath) where FileSystem.exists(dir) {
            for e in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where e.hasPrefix("exec-") {
                rmdir(dir + "/" + e)
            }
        }
        return watch(p.id, box, onExit)
    }

    /// Watches a sandbox's init: `onExit` hears of an exit nobody asked for.
    func watch(_ id: SandboxID, _ box: RunningBox, _ onExit: @escaping InitExitHandler) -> Bool {
        let pid = box.pid
        let ok = Reaper.shared.watch(pid: pid) { status in
            guard !box.stopping.load(ordering: .relaxed) else { return }
            onExit(id, pid, status)
        }
        if !ok { logger.error("cannot watch sandbox init", metadata: ["id": "\(id)", "pid": "\(pid)"]) }
        return ok
    }

    /// The signals go through the watch's pidfd: no crun process, and never a recycled pid.
    public func halt(_ p: BoxPlan, pid: Int32?, grace: Duration?) async throws {
        let box = box(p.id)
        box?.stopping.store(true, ordering: .relaxed)
        defer { box?.stopping.store(false, ordering: .relaxed) }
        if let pid, processAlive(pid) {
            let exited = Event()
            if Reaper.shared.watch(pid: pid, onExit: { _ in exited.fire() }) {
                await signal(p, pid, SIGTERM)
                // An init in a PID namespace drops a signal it neither handles nor blocks yet: one that was
                // only starting missed the first TERM, so it gets a second one (it exits at once).
                if !(await exited.wait(timeout: .milliseconds(100))) { await signal(p, pid, SIGTERM) }
                if !(await exited.wait(timeout: grace ?? layout.stopTimeout)) {
                    await signal(p, pid, SIGKILL)
                    _ = await exited.wait(timeout: .seconds(5))
                }
            }
        }
        try await release(p)
    }

    func signal(_ p: BoxPlan, _ pid: Int32, _ sig: Int32) async {
        if !Reaper.shared.signal(watched: pid, sig) { try? await oci.kill(id: p.id.rawValue, signal: sig) }
    }

    public func release(_ p: BoxPlan) async throws {
        let box = running.withLock { $0.removeValue(forKey: p.id) }
        // Deleting the container kills the init: that exit is no news.
        box?.stopping.store(true, ordering: .relaxed)
        await box?.network?.detach()
        try await oci.delete(id: p.id.rawValue, force: true)
        removeCgroups(p)
        // The two mounts a sandbox has on the host, without reading the mount table; anything else
        // found below the bundle stops its removal from the trash.
        try Mounts.unmountStack(p.rootfsMount)
        try Mounts.unmountStack(p.lowerMount)
        try? FileManager.default.removeItem(atPath: specDir(p.id))
    }

    public func destroy(_ p: BoxPlan, released: Bool) async throws {
        if !released { try await release(p) }
        // The root is unmounted: the subvolume (and its qgroup) can go at once; the kernel frees its blocks.
        try pool?.destroy(p.id)
        try trash.discard(p.bundle, checking: [p.rootfsMount, p.lowerMount])
        trashed.signal()
    }

    /// Removes what the trash holds; returns how many trees.
    public func emptyTrash() async -> Int { await trash.empty() }

    /// Removes what crun leaves of a sandbox's cgroups: the exec cgroups below it, then its own (both are
    /// empty once the init is gone, since the PID namespace died with it).
    func removeCgroups(_ p: BoxPlan) {
        for root in cgroups.directories(p.cgroupPath) where FileSystem.exists(root) {
            for e in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
            where e.hasPrefix("exec-") || e.hasPrefix("proc-") {
                rmdir(root + "/" + e)
            }
            rmdir(root)
        }
    }

    public func diskUsage(_ p: BoxPlan) async -> Int64 {
        let now = ContinuousClock.now
        let box = box(p.id)
        if let c = box?.diskUsage.withLock({ $0 }), now - c.at < Self.diskUsageTTL { return c.bytes }
        let bytes: Int64
        if let pool, let used = pool.usage(p.id) {
            bytes = used
        } else {
            bytes = await FileSystem.diskUsage(layers(p).upper)
        }
        box?.diskUsage.withLock { $0 = (bytes, now) }
        return bytes
    }

    public func containers() async throws -> [ContainerState] { try await oci.list() }

    public func isAlive(pid: Int32) -> Bool { processAlive(pid) }

    public func holdsMounts(_ p: BoxPlan) -> Bool {
        Mounts.isMountRoot(p.rootfsMount) || Mounts.isMountRoot(p.lowerMount)
    }

    /// What an earlier version kept on disk with environment values in it: crun's root under the state
    /// directory (its containers are deleted: this daemon cannot manage them, and the reconciler boots
    /// their sandboxes again or marks them stopped) and each bundle's runtime spec and exec files.
    public func removeLegacySpecs(crunRoot legacy: String) async -> Int {
        var removed = 0
        if FileSystem.exists(legacy) {
            let old = Crun(root: legacy, cgroupMode: cgroups.mode, logger: logger)
            for c in (try? await old.list()) ?? [] where (try? await old.delete(id: c.id, force: true)) != nil {
                removed += 1
            }
            try? await FileSystem.removeTree(legacy)
        }
        for e in (try? FileManager.default.contentsOfDirectory(atPath: layout.sandboxesDir)) ?? [] {
            let dir = layout.sandboxesDir + "/" + e
            if unlink(dir + "/config.json") == 0 { removed += 1 }
            unlink(dir + "/init.pid")
            try? FileManager.default.removeItem(atPath: dir + "/exec")
        }
        return removed
    }

    public func removeOrphans(live: Set<String>) async -> Int {
        var removed = 0
        for c in (try? await oci.list()) ?? [] where !live.contains(c.id) {
            if (try? await oci.delete(id: c.id, force: true)) != nil { removed += 1 }
        }
        for e in (try? FileManager.default.contentsOfDirectory(atPath: layout.sandboxesDir)) ?? []
        where !live.contains(e) {
            let dir = layout.sandboxesDir + "/" + e
            do {
                try Mounts.unmountAll(under: dir)
                try trash.discard(dir, checking: [dir + "/rootfs", dir + "/lower"])
                removed += 1
            } catch {
                logger.error("cannot remove orphan", metadata: ["path": "\(dir)", "error": "\(error)"])
            }
        }
        if removed > 0 { trashed.signal() }
        for e in (try? FileManager.default.contentsOfDirectory(atPath: layout.specsDir)) ?? [] where !live.contains(e) {
            try? FileManager.default.removeItem(atPath: layout.specsDir + "/" + e)
        }
        if let pool { removed += pool.removeOrphans(live: live) }
        for dir in cgroups.directories("/" + layout.cgroupParent) where FileSystem.exists(dir) {
            for e in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where !live.contains(e) {
                var st = stat()
                if lstat(dir + "/" + e, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR, rmdir(dir + "/" + e) == 0 {
                    removed += 1
                }
            }
        }
        return removed
    }

    // MARK: Exec

    public func start(_ p: BoxPlan, _ command: ExecCommand, terminal: RuntimeSpec.ConsoleSize?, stdin: Bool)
        async throws -> ExecSession
    {
        guard let box = box(p.id) else { throw VivariumError(.invalidState, "sandbox must be running") }
        let process = processSpec(box, command, terminal: terminal)
        let token = randomHex(bytes: 8)
        let files = specDir(p.id) + "/exec/" + token
        try FileSystem.writeAtomically(try JSONEncoder().encode(process), to: files + ".json", durable: false)
        // The cgroup exists before the command does, so that a timeout however short has something to kill.
        let group: Cgroup
        do {
            group = try acquireExecCgroup(p, box)
        } catch {
            unlink(files + ".json")
            throw error
        }
        let cleanup: @Sendable () -> Void = { [self] in
            unlink(files + ".json")
            unlink(files + ".pid")
            releaseExecCgroup(box, group)
        }
        do {
            let consolePath = terminal.map { _ in files + ".sock" }
            let console = try consolePath.map { try ConsoleSocket(path: $0) }
            let crun = try oci.exec(
                id: p.id.rawValue, processFile: files + ".json", cgroup: group.name, pidFile: files + ".pid",
                consoleSocket: consolePath, stdin: stdin && terminal == nil, oomScoreAdjust: layout.oomScoreAdjust)
            let io: ExecSession.IO
            if let console {
                guard let master = await console.receiveMaster(from: crun) else {
                    let err = await crun.stderr?.collect(limit: 4096).bytes ?? []
                    await group.killAll()
                    throw VivariumError(
                        .runtimeFailure,
                        "the terminal could not be set up: \(String(decoding: err, as: UTF8.self).prefix(300))")
                }
                let input = ByteSink(fd: dup(master))
                io = .terminal(ExecSession.Terminal(output: crun.attachOutput(fd: master), input: input))
            } else {
                io = .pipes(stdout: crun.stdout, stderr: crun.stderr, stdin: crun.stdin)
            }
            return ExecSession(crun: crun, cgroup: group, io: io, pidFile: files + ".pid", cleanup: cleanup)
        } catch {
            cleanup()
            throw error
        }
    }

    /// The process spec of a command: the init's hardening and environment, the command's own on top.
    func processSpec(_ box: RunningBox, _ command: ExecCommand, terminal: RuntimeSpec.ConsoleSize?)
        -> RuntimeSpec.Process
    {
        var env = box.env
        for (k, v) in command.env { env[k] = v }
        if command.user != 0 && env["HOME"] == nil { env["HOME"] = "/" }
        return HardenedSpec.process(
            args: command.argv, env: env, cwd: command.workdir, uid: command.user, gid: command.user,
            terminal: terminal, oomScoreAdjust: layout.oomScoreAdjust)
    }

    /// An empty exec cgroup of the sandbox: an idle one, or a new one (a directory per hierarchy, about
    /// 0.8 ms here, so finished execs hand theirs back).
    func acquireExecCgroup(_ p: BoxPlan, _ box: RunningBox) throws -> Cgroup {
        while let g = box.idleExecCgroups.withLock({ $0.popLast() }) {
            if g.isEmpty && g.exists { return g }
        }
        let name = "exec-" + randomHex(bytes: 8)
        // Below the sandbox's cgroup in every v1 hierarchy that holds it (crun exec --cgroup joins the
        // sub-cgroup only where it exists and would leave the process outside the sandbox's limits
        // elsewhere), or the one v2 directory.
        let g = Cgroup(
            name: name, dirs: cgroups.directories(p.cgroupPath).filter(FileSystem.exists).map { $0 + "/" + name })
        try g.create()
        return g
    }

    /// Returns an empty exec cgroup to its sandbox (a few each); one that still holds processes the command
    /// left in the background stays until the sandbox goes.
    func releaseExecCgroup(_ box: RunningBox, _ g: Cgroup) {
        guard g.isEmpty else { return }
        let kept = box.idleExecCgroups.withLock { idle -> Bool in
            guard idle.count < 4 else { return false }
            idle.append(g)
            return true
        }
        if !kept { g.removeIfEmpty() }
    }
}

/// True when `pid` exists and is not a zombie.
func processAlive(_ pid: Int32) -> Bool {
    guard let st = processState(pid) else { return false }
    return st != "Z" && st != "X"
}
