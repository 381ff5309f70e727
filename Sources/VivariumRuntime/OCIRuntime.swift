import Foundation
import Logging
import VivariumCore
import VivariumOS

/// What the OCI runtime reports about one container.
public struct ContainerState: Codable, Sendable, Equatable {
    public var id: String
    public var pid: Int32
    public var status: String

    public init(id: String, pid: Int32, status: String) {
        self.id = id
        self.pid = pid
        self.status = status
    }
}

/// The seam between the engine and an OCI runtime binary.
public protocol OCIRuntime: Sendable {
    /// Creates the container from a bundle: namespaces and init exist, the init has not started.
    /// Returns the init's host pid.
    func create(id: String, bundle: String) async throws -> Int32
    func start(id: String) async throws
    func list() async throws -> [ContainerState]
    func kill(id: String, signal: Int32) async throws
    /// Deletes the container; a container that does not exist is already deleted.
    func delete(id: String, force: Bool) async throws
    /// Starts a process (OCI process JSON at `processFile`) in the container, inside the existing
    /// sub-cgroup `cgroup` of the container's cgroup, writing its host pid to `pidFile`. With a
    /// `consoleSocket` the process gets a terminal whose master the runtime sends there; otherwise the
    /// returned child's stdout and stderr are the process's, and its stdin when `stdin`. The process
    /// starts with `oomScoreAdjust` (runtimes apply the process JSON's own only to a container's init).
    func exec(
        id: String, processFile: String, cgroup: String, pidFile: String, consoleSocket: String?, stdin: Bool,
        oomScoreAdjust: Int
    ) throws -> ChildProcess
    /// The command line of an exec that another process (a detached command's shim) runs.
    func detachedExec(id: String, processFile: String, cgroup: String, pidFile: String) -> Command
}

/// The crun driver. Every host-wide crun state lives under `root`, one per Vivarium instance.
public struct Crun: OCIRuntime {
    public let binary: String
    public let root: String
    public let cgroupMode: CgroupMode
    let logger: Logger

    public init(binary: String = "/usr/bin/crun", root: String, cgroupMode: CgroupMode, logger: Logger) {
        self.binary = binary
        self.root = root
        self.cgroupMode = cgroupMode
        self.logger = logger
    }

    func command(_ args: [String], hideCgroup2: Bool = false, outputLimit: Int = 64 << 10) -> Command {
        Command(binary, ["--root", root] + args, hideCgroup2: hideCgroup2, outputLimit: outputLimit)
    }

    @discardableResult
    func run(_ args: [String], hideCgroup2: Bool = false) async throws -> ProcessOutput {
        let out = try await Reaper.shared.run(command(args, hideCgroup2: hideCgroup2))
        guard out.status == .exited(0) else {
            let msg = out.stderrString.trimmingCharacters(in: .whitespacesAndNewlines)
            throw VivariumError(.runtimeFailure, "crun \(args.first ?? "") failed (\(out.status)): \(msg.prefix(500))")
        }
        return out
    }

    public func create(id: String, bundle: String) async throws -> Int32 {
        // The pid file spares a `crun state` process on the create path.
        let pidFile = bundle + "/init.pid"
        unlink(pidFile)
        // crun 1.8 refuses a hybrid cgroup layout; it works when it cannot see the cgroup2 mount.
        try await run(["create", "--bundle", bundle, "--pid-file", pidFile, id], hideCgroup2: cgroupMode == .hybrid)
        guard let text = FileSystem.readAll(pidFile),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
            pid > 0
        else { throw VivariumError(.runtimeFailure, "crun created no init process") }
        return pid
    }

    public func start(id: String) async throws {
        try await run(["start", id])
    }

    public func list() async throws -> [ContainerState] {
        let out = try await run(["list", "--format", "json"])
        if out.stdout.allSatisfy({ $0 == 10 || $0 == 32 }) { return [] }
        return try JSONDecoder().decode([ContainerState].self, from: Data(out.stdout))
    }

    public func kill(id: String, signal: Int32) async throws {
        try await run(["kill", id, String(signal)])
    }

    public func delete(id: String, force: Bool) async throws {
        // crun keeps a container's state in <root>/<id>: without it there is nothing to delete, and no
        // crun process needs to start to say so.
        guard FileSystem.exists(root + "/" + id) else { return }
        try await run(["delete"] + (force ? ["--force"] : []) + [id])
    }

    public func exec(
        id: String, processFile: String, cgroup: String, pidFile: String, consoleSocket: String?, stdin: Bool,
        oomScoreAdjust: Int
    ) throws -> ChildProcess {
        var args = ["exec", "--cgroup", cgroup, "--process", processFile, "--pid-file", pidFile]
        if let consoleSocket { args += ["--tty", "--console-socket", consoleSocket] }
        var c = command(args + [id])
        c.oomScoreAdjust = oomScoreAdjust
        return try Reaper.shared.spawn(c, stdin: stdin)
    }

    public func detachedExec(id: String, processFile: String, cgroup: String, pidFile: String) -> Command {
        command(["exec", "--cgroup", cgroup, "--process", processFile, "--pid-file", pidFile, id])
    }
}
