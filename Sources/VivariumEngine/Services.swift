import Logging
import ServiceLifecycle
import VivariumCore
import VivariumOS
import VivariumRuntime

/// Runs `work` every `interval` until the ServiceGroup shuts down.
public struct PeriodicService: Service {
    let interval: Duration
    let work: @Sendable () async -> Void

    public init(every interval: Duration, _ work: @escaping @Sendable () async -> Void) {
        self.interval = interval
        self.work = work
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            } catch { return }
            await work()
        }
    }
}

/// A sandbox init's exit that nobody asked for, as the runtime reports it.
struct InitExit: Sendable {
    let id: SandboxID
    let pid: Int32
    let status: ExitStatus?
}

/// Handles init exits nobody asked for (stop the sandbox, or restart it under `restart: always`), each
/// in a child task of the service, so that a slow restart does not hold up the others.
struct InitWatch: Service {
    let sandboxes: Sandboxes

    func run() async throws {
        await withDiscardingTaskGroup { group in
            for await e in sandboxes.exits.cancelOnGracefulShutdown() {
                group.addTask { await sandboxes.initExited(e.id, pid: e.pid, status: e.status) }
            }
        }
    }
}

/// Empties the runtime's trash of deleted sandboxes' bundles whenever something lands in it, and once
/// at start (what a crash left there).
public struct TrashCollector: Service {
    let runtime: HostRuntime
    let logger: Logger

    public init(runtime: HostRuntime, logger: Logger) {
        self.runtime = runtime
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let removed = await runtime.emptyTrash()
            if removed > 0 { logger.debug("emptied the trash", metadata: ["trees": "\(removed)"]) }
            await cancelWhenGracefulShutdown { await runtime.trashed.wait() }
        }
    }
}

/// Collects the image store's garbage whenever an engine operation asks for it (a failed or refused
/// pull or import, a reference moved to a new digest), one collection at a time.
struct ImageCollector: Service {
    let images: Images

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await cancelWhenGracefulShutdown { await images.collectionWanted.wait() }
            if Task.isShuttingDownGracefully || Task.isCancelled { return }
            do { try await images.collectGarbage() } catch {
                images.logger.warning("image store collection failed", metadata: ["error": "\(error)"])
            }
        }
    }
}
