import Foundation
import Glibc
import Logging
import ServiceLifecycle
import Synchronization
import VivariumCore
import VivariumOS
import VivariumRuntime
import VivariumStore

/// The host side of sandboxes: directories, the idmapped root, the bundle, crun, cgroups and teardown.
final class SandboxHost: Sendable {
    let config: EngineConfiguration
    let runtime: any OCIRuntime
    let logger: Logger
    /// Sandboxes whose init is being stopped on purpose: their exit is not a crash.
    let stoppingIDs = Mutex<Set<SandboxID>>([])
    let swapAccounting: Bool
    /// Upper-dir usage per sandbox, walked at most every `diskUsageTTL` (a walk is O(files)).
    let diskUsageCache = Mutex<[SandboxID: (bytes: Int64, at: ContinuousClock.Instant)]>([:])
    /// Idle exec cgroups per sandbox.
    let execCgroupPool = Mutex<[SandboxID: [ExecCgroup]]>([:])
    /// The cgroup hierarchies sandboxes live in, listed once: the v2 root, or each v1 controller's.
    let cgroupHierarchies: [String]
    /// Bundles of deleted sandboxes, removed in the background (`TrashCollector`).
    let trash: Trash
    let trashed = WakeSignal()
    static let diskUsageTTL = Duration.seconds(5)

    init(config: EngineConfiguration, runtime: any OCIRuntime, logger: Logger) throws {
        self.config = config
        self.runtime = runtime
        self.logger = logger
        trash = try Trash(dir: config.stateDir + "/trash")
        switch config.cgroupMode {
        case .unified:
            // memory.swap.max exists in non-root cgroups when the kernel accounts swap.
            let children = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []
            swapAccounting = children.contains { FileSystem.exists("/sys/fs/cgroup/\($0)/memory.swap.max") }
        case .legacy, .hybrid:
            swapAccounting = FileSystem.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
        }
        cgroupHierarchies =
            config.cgroupMode == .unified
            ? ["/sys/fs/cgroup"]
            : ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []).filter {
                $0 != "unified"
            }.sorted().map { "/sys/fs/cgroup/" + $0 }
        if !swapAccounting {
            logger.warning("swap is not accounted on this host: sandboxes get swappiness 0 instead of a swap limit")
        }
    }

    func uidBase(_ r: SandboxRecord) -> Int64 { config.uidBase + Int64(r.uidSlot) * HardenedSpec.idRangeSize }

    func isStopping(_ id: SandboxID) -> Bool { stoppingIDs.withLock { $0.contains(id) } }

    /// Runs `body` with the sandbox marked as stopping on purpose.
    func stopping<T>(_ id: SandboxID, _ body: () async throws -> T) async rethrows -> T {
        stoppingIDs.withLock { _ = $0.insert(id) }
        defer { stoppingIDs.withLock { _ = $0.remove(id) } }
        return try await body()
    }

    func prepareDirectories(_ r: SandboxRecord) throws {
        let base = uidBase(r)
        // Only root and the sandbox's own id range may enter its bundle: the upper dir and the mounted
        // root inside hold the tenant's files.
        try FileSystem.makeDirectory(r.bundle, mode: 0o710, owner: (0, gid_t(base)))
        try FileSystem.makeDirectory(r.lowerMount, mode: 0o755)
        try FileSystem.makeDirectory(r.rootfsMount, mode: 0o755)
        try FileSystem.makeDirectory(r.upperDir, mode: 0o755, owner: (uid_t(base), gid_t(base)))
        try FileSystem.makeDirectory(r.workDir, mode: 0o700, owner: (uid_t(base), gid_t(base)))
        try FileSystem.makeDirectory(r.bundle + "/exec", mode: 0o700)
    }

    /// Mounts the root (idmapped image as overlay lower, the sandbox's upper), writes the hardened
    /// bundle and runs crun create + start; `watch` hears of an init exit nobody asked for. Returns the
    /// init's host pid.
    func boot(_ r: SandboxRecord, watch: @escaping @Sendable (Int32, ExitStatus?) -> Void) async throws -> Int32 {
        let base = uidBase(r)
        let mounted = Set(Mounts.mounts(under: r.bundle))  // one read of the mount table
        if !mounted.contains(r.rootfsMount) {
            if !mounted.contains(r.lowerMount) {
                let userns = try UserNamespace(base: base, size: HardenedSpec.idRangeSize)
                try Mounts.idmappedBind(source: r.imageRootfs, target: r.lowerMount, userns: userns, readOnly: true)
            }
            try Mounts.overlay(lower: r.lowerMount, upper: r.upperDir, work: r.workDir, target: r.rootfsMount)
        }
        let spec = HardenedSpec(
            hostname: r.name.rawValue, rootfs: r.rootfsMount, readOnly: r.spec.readOnly, hostUIDBase: base,
            limits: r.spec.limits, env: r.spec.env, cgroupsPath: r.cgroupPath, initBinary: config.initBinary,
            swapAccounting: swapAccounting
        ).build()
        try FileSystem.writeAtomically(try JSONEncoder().encode(spec), to: r.bundle + "/config.json", durable: false)
        let pid = try await runtime.create(id: r.id.rawValue, bundle: r.bundle)
        guard watchInit(r.id, pid: pid, watch) else {
            throw VivariumError(.runtimeFailure, "cannot watch the sandbox's init (out of file descriptors?)")
        }
        try await runtime.start(id: r.id.rawValue)
        return pid
    }

    /// Watches a sandbox's init: `onExit` hears of an exit nobody asked for.
    @discardableResult
    func watchInit(_ id: SandboxID, pid: Int32, _ onExit: @escaping @Sendable (Int32, ExitStatus?) -> Void) -> Bool {
        let ok = Reaper.shared.watch(pid: pid) { [self] status in
            guard !isStopping(id) else { return }
            onExit(pid, status)
        }
        if !ok { logger.error("cannot watch sandbox init", metadata: ["id": "\(id)", "pid": "\(pid)"]) }
        return ok
    }

    /// Stops the init (TERM, then KILL after the grace period) and releases crun's container and the mounts.
    /// The signals go through the watch's pidfd: no crun process, and never a recycled pid.
    func halt(_ r: SandboxRecord, grace: Duration? = nil) async throws {
        try await stopping(r.id) {
            if let pid = r.state.pid, Self.processAlive(pid) {
                let exited = ExitSignal()
                if Reaper.shared.watch(pid: pid, onExit: { _ in exited.fire() }) {
                    await signal(r, pid, SIGTERM)
                    // An init in a PID namespace drops a signal it neither handles nor blocks yet: one that
                    // was only starting missed the first TERM, so it gets a second one (it exits at once).
                    if !(await exited.wait(timeout: .milliseconds(100))) { await signal(r, pid, SIGTERM) }
                    if !(await exited.wait(timeout: grace ?? config.stopTimeout)) {
                        await signal(r, pid, SIGKILL)
                        _ = await exited.wait(timeout: .seconds(5))
                    }
                }
            }
            try await release(r)
        }
    }

    func signal(_ r: SandboxRecord, _ pid: Int32, _ sig: Int32) async {
        if !Reaper.shared.signal(watched: pid, sig) { try? await runtime.kill(id: r.id.rawValue, signal: sig) }
    }

    /// crun delete --force and unmount; keeps the sandbox's directories (its upper dir is its disk).
    func release(_ r: SandboxRecord) async throws {
        try await runtime.delete(id: r.id.rawValue, force: true)
        removeCgroups(r)
        try Mounts.unmountAll(under: r.bundle)
    }

    /// Removes everything a sandbox holds on the host: crun container, cgroup, mounts, and its bundle, which
    /// goes to the trash (one rename; the tree is removed in the background). A sandbox that `halt`
    /// already released needs only its directories removed.
    func destroy(_ r: SandboxRecord, released: Bool = false) async throws {
        if !released { try await release(r) }
        diskUsageCache.withLock { _ = $0.removeValue(forKey: r.id) }
        try trash.discard(r.bundle)
        trashed.signal()
    }

    /// A sandbox's cgroup directory in each hierarchy (whether crun made it there or not).
    func sandboxCgroups(_ r: SandboxRecord) -> [String] { cgroupHierarchies.map { $0 + r.cgroupPath } }

    /// Removes what crun leaves of a sandbox's cgroups: the exec cgroups below it, then its own (both
    /// are empty once the init is gone, since the PID namespace died with it).
    func removeCgroups(_ r: SandboxRecord) {
        execCgroupPool.withLock { $0[r.id] = nil }
        for root in sandboxCgroups(r) where FileSystem.exists(root) {
            for e in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] where e.hasPrefix("exec-") {
                rmdir(root + "/" + e)
            }
            rmdir(root)
        }
    }

    /// The cgroup directories that hold this instance's sandboxes, one per v1 controller or the v2 one.
    func instanceCgroupDirs() -> [String] {
        cgroupHierarchies.map { $0 + "/" + config.cgroupParent }.filter(FileSystem.exists)
    }

    func diskUsage(_ r: SandboxRecord) async -> Int64 {
        let now = ContinuousClock.now
        if let c = diskUsageCache.withLock({ $0[r.id] }), now - c.at < Self.diskUsageTTL { return c.bytes }
        let bytes = await FileSystem.diskUsage(r.upperDir)
        diskUsageCache.withLock { cache in
            if cache.count > 4 * config.maxSandboxes { cache.removeAll() }
            cache[r.id] = (bytes, now)
        }
        return bytes
    }

    /// True when `pid` exists and is not a zombie.
    static func processAlive(_ pid: Int32) -> Bool {
        guard let st = processState(pid) else { return false }
        return st != "Z" && st != "X"
    }
}

/// A one-shot event with a timed wait.
final class ExitSignal: Sendable {
    private struct State {
        var fired = false
        var next = 0
        var waiters: [Int: CheckedContinuation<Bool, Never>] = [:]
    }
    private let state = Mutex(State())

    func fire() {
        let ws = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            s.fired = true
            defer { s.waiters = [:] }
            return Array(s.waiters.values)
        }
        for w in ws { w.resume(returning: true) }
    }

    /// True if it fired before the timeout ran out.
    func wait(timeout: Duration) async -> Bool {
        await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            let id = state.withLock { s -> Int? in
                if s.fired { return nil }
                s.next += 1
                s.waiters[s.next] = c
                return s.next
            }
            guard let id else { return c.resume(returning: true) }
            Task {
                try? await Task.sleep(for: timeout)
                if let w = self.state.withLock({ $0.waiters.removeValue(forKey: id) }) { w.resume(returning: false) }
            }
        }
    }
}

/// Empties the trash of deleted sandboxes' bundles whenever something lands in it, and once at start
/// (what a crash left there).
struct TrashCollector: Service {
    let host: SandboxHost

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let removed = await host.trash.empty()
            if removed > 0 { host.logger.debug("emptied the trash", metadata: ["trees": "\(removed)"]) }
            await cancelWhenGracefulShutdown { await host.trashed.wait() }
        }
    }
}
