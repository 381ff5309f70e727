import Foundation
import Glibc
import Testing
import VivariumClient
import VivariumCore
import VivariumOS

/// Whether the integration prerequisites (root, crun, the built binaries) are here, and whether CI
/// demands them (`VIVARIUM_REQUIRE_INTEGRATION=1` turns a missing prerequisite into a failure).
public enum Integration {
    public static let required = ProcessInfo.processInfo.environment["VIVARIUM_REQUIRE_INTEGRATION"] == "1"

    public static var missing: [String] {
        var m: [String] = []
        if geteuid() != 0 { m.append("root") }
        if access("/usr/bin/crun", X_OK) != 0 { m.append("crun (/usr/bin/crun)") }
        if access("/bin/busybox", X_OK) != 0 { m.append("busybox-static (/bin/busybox)") }
        if access("/usr/bin/curl", X_OK) != 0 { m.append("curl (/usr/bin/curl)") }
        if access("/usr/sbin/nft", X_OK) != 0 { m.append("nftables (/usr/sbin/nft)") }
        if access("/usr/sbin/mkfs.btrfs", X_OK) != 0 { m.append("btrfs-progs (/usr/sbin/mkfs.btrfs)") }
        if access("/usr/bin/python3", X_OK) != 0 { m.append("python3, for test listeners") }
        if access("/usr/bin/gcc", X_OK) != 0 { m.append("gcc, for static probes") }
        if access("/usr/bin/sqlite3", X_OK) != 0 {
            m.append("sqlite3 (/usr/bin/sqlite3), to tamper with the audit trail")
        }
        if access(Paths.vivarium, X_OK) != 0 { m.append("the vivarium binary (\(Paths.vivarium)): run `make debug`") }
        return m
    }

    /// An executable on PATH.
    public static func executable(_ name: String) -> String? {
        let dirs = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        return dirs.map { "\($0)/\(name)" }.first { access($0, X_OK) == 0 }
    }

    /// Integration tests run when everything is here, and also when CI requires them (so that a
    /// missing prerequisite fails loudly instead of skipping).
    public static var enabled: Bool { required || missing.isEmpty }
}

public enum Paths {
    /// The package root, found from this file's location.
    public static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
    public static var buildDir: String {
        ProcessInfo.processInfo.environment["VIVARIUM_BUILD_DIR"] ?? packageRoot + "/.build/debug"
    }
    public static var vivarium: String { ProcessInfo.processInfo.environment["VIVARIUM_BIN"] ?? buildDir + "/vivarium" }
}

/// The result of running a command to completion.
public struct CommandResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs a program to completion and captures its output (test and bench helper). Its stdin is `input`,
/// or /dev/null.
@discardableResult
public func runCommand(
    _ path: String, _ args: [String], env: [String: String] = [:], unset: [String] = [], input: Data? = nil
) throws -> CommandResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    var e = ProcessInfo.processInfo.environment
    for (k, v) in env { e[k] = v }
    for k in unset { e[k] = nil }
    p.environment = e
    let out = Pipe()
    let err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let stdin = input.map { _ in Pipe() }
    p.standardInput = stdin ?? FileHandle.nullDevice
    try p.run()
    if let stdin, let input {
        DispatchQueue.global().async {
            try? stdin.fileHandleForWriting.write(contentsOf: input)
            try? stdin.fileHandleForWriting.close()
        }
    }
    let group = DispatchGroup()
    nonisolated(unsafe) var errData = Data()
    group.enter()
    DispatchQueue.global().async {
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    return CommandResult(
        status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self))
}

/// A real `vivarium serve` on a private state directory and socket, for integration tests and the
/// benchmark. `shutdown()` removes every sandbox, mount, crun container and cgroup it made.
public final class TestDaemon: @unchecked Sendable {
    public let root: String
    public let stateDir: String
    public let socket: String
    public let uidBase: Int64
    public let client: APIClient
    public private(set) var process: Process?
    public let logPath: String
    let extraEnv: [String: String]

    /// The loopback port of the plain-HTTP listener, when started with `tcp: true`.
    public let tcpPort: UInt16?

    /// The vivarium binary this daemon runs (an older build, for the benchmark's before/after rows).
    public let binary: String

    public init(extraEnv: [String: String] = [:], tcp: Bool = false, binary: String = Paths.vivarium) throws {
        self.binary = binary
        let missing = Integration.missing
        guard missing.isEmpty else {
            throw VivariumError(.unavailable, "integration prerequisites missing: \(missing.joined(separator: ", "))")
        }
        root = "/tmp/vivarium-test-" + randomHex(bytes: 6)
        stateDir = root + "/state"
        socket = root + "/sock/vivarium.sock"
        logPath = root + "/daemon.log"
        // A private block of ranges far from the default instance's.
        let block = Int64(extraEnv["VIVARIUM_MAX_SANDBOXES"].flatMap { Int64($0) } ?? 16) * 65536
        uidBase = (1 << 30) + Int64.random(in: 0..<((Int64(UInt32.max) - (1 << 30)) / block - 1)) * block
        var http = SocketHTTPClient(socketPath: socket)
        http.receiveTimeout = .seconds(120)
        client = APIClient(http: http)
        var env = extraEnv
        if tcp {
            let port = try freeLoopbackPort()
            tcpPort = port
            env["VIVARIUM_LISTEN"] = "127.0.0.1:\(port)"
            env["VIVARIUM_INSECURE_HTTP"] = "true"
        } else {
            tcpPort = nil
        }
        self.extraEnv = env
        try FileSystem.makeDirectory(root, mode: 0o711)
        try FileSystem.makeDirectory(root + "/sock", mode: 0o700)
        try start()
    }

    public var environment: [String: String] {
        var e = [
            "VIVARIUM_STATE_DIR": stateDir, "VIVARIUM_SOCKET": socket, "VIVARIUM_UID_BASE": String(uidBase),
            "VIVARIUM_MAX_SANDBOXES": "16", "VIVARIUM_TTL_SWEEP_SECONDS": "1", "VIVARIUM_STOP_TIMEOUT_SECONDS": "5",
            "VIVARIUM_LOG_LEVEL": "info",
            // Tests never touch the host's own network: a test that wants one puts it in a namespace of
            // its own (NetworkLab, network_netns).
            "VIVARIUM_NETWORK": "off",
            // A small disk pool: the shared machine's disk is not strained (each daemon preallocates it).
            // 64 sandboxes at this default quota fill the disk budget (2 × the pool) exactly.
            "VIVARIUM_DISK_POOL_SIZE": "512M", "VIVARIUM_DISK_DEFAULT": "16M",
            "VIVARIUM_UID_REGISTRY": root + "/uid-ranges.json",
            // The runtime tmpfs, outside the state directory (which must never hold a secret in clear).
            "VIVARIUM_RUNTIME_DIR": runtimeDir,
        ]
        for (k, v) in extraEnv { e[k] = v }
        return e
    }

    /// Starts the daemon and waits until its health check answers.
    public func start() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["serve"]
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        if !FileManager.default.fileExists(atPath: logPath) {
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if !p.isRunning {
                throw VivariumError(.unavailable, "vivarium serve exited: \(self.log.suffix(2000))")
            }
            if let r = try? client.http.send("GET", "/healthz"), r.status == 200 { return }
            usleep(20_000)
        }
        throw VivariumError(.unavailable, "vivarium serve did not answer within 30 s: \(self.log.suffix(2000))")
    }

    /// SIGTERM and wait: a graceful stop that leaves sandboxes running.
    public func stop() {
        guard let p = process, p.isRunning else { return }
        p.terminate()
        p.waitUntilExit()
        process = nil
    }

    /// SIGKILL: a crash.
    public func crash() {
        guard let p = process, p.isRunning else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
    }

    public func restart() throws {
        stop()
        try start()
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Runs the CLI against this daemon.
    @discardableResult
    public func cli(_ args: String...) throws -> CommandResult { try cli(args) }

    public func cli(_ args: [String], input: Data? = nil) throws -> CommandResult {
        try runCommand(Paths.vivarium, args, env: environment, input: input)
    }

    /// The daemon's runtime tmpfs: specs, crun's root, secrets.
    public var runtimeDir: String { root + "/run" }
    public var crunRoot: String { runtimeDir + "/crun" }
    /// The sandbox init the daemon installed (the one built into the binary).
    public var initBinary: String { stateDir + "/init/vivarium-init" }
    public var cgroupParent: String { "vivarium-" + instance }
    public var instance: String { String(Digest.of(Array(stateDir.utf8)).hex.prefix(8)) }

    /// crun containers of this instance.
    public func crunContainers() throws -> [String] {
        let r = try runCommand("/usr/bin/crun", ["--root", crunRoot, "list", "-q"])
        return r.stdout.split(separator: "\n").map(String.init).filter { !$0.isEmpty }
    }

    /// Mounts under this daemon's state directory, but for the disk pool (which stays while the daemon runs).
    public func mounts() -> [String] { Mounts.mounts(under: stateDir).filter { $0 != poolMount } }

    /// Where the daemon mounts its disk pool (a loop-mounted btrfs image, `poolImage`).
    public var poolMount: String { stateDir + "/pool" }
    public var poolImage: String { stateDir + "/pool.img" }
    /// The writable layer of the sandbox `id`: its upper dir, in its pool subvolume.
    public func upperDir(_ id: String) -> String { poolMount + "/" + id + "/upper" }

    /// Sandbox bundle directories on disk.
    public func bundles() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: stateDir + "/sandboxes")) ?? []
    }

    /// Cgroup directories of this instance's sandboxes, across controllers.
    public func cgroups() -> [String] {
        var out: [String] = []
        let base = "/sys/fs/cgroup"
        let dirs: [String]
        if CgroupMode.detect() == .unified {
            dirs = [base + "/" + cgroupParent]
        } else {
            dirs = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []).filter { $0 != "unified" }
                .map { "\(base)/\($0)/\(cgroupParent)" }
        }
        for d in dirs {
            for e in (try? FileManager.default.contentsOfDirectory(atPath: d)) ?? [] {
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: d + "/" + e, isDirectory: &isDir), isDir.boolValue {
                    out.append(d + "/" + e)
                }
            }
        }
        return out
    }

    /// Stops the daemon and removes everything it made, even after a failed test.
    public func shutdown() {
        if process?.isRunning == true {
            if let page: Page<SandboxInfo> = try? client.call("GET", "/v1/sandboxes?limit=500") {
                for s in page.items { _ = try? client.callNoContent("DELETE", "/v1/sandboxes/\(s.name)?force=true") }
            }
        }
        crash()
        for id in (try? crunContainers()) ?? [] {
            _ = try? runCommand("/usr/bin/crun", ["--root", crunRoot, "delete", "--force", id])
        }
        try? Mounts.unmountAll(under: root)
        for cg in cgroups().sorted(by: { $0.count > $1.count }) { rmdir(cg) }
        for d in cgroupParentDirs() { rmdir(d) }
        _ = try? runCommand("/bin/rm", ["-rf", "--one-file-system", root])
    }

    func cgroupParentDirs() -> [String] {
        if CgroupMode.detect() == .unified { return ["/sys/fs/cgroup/" + cgroupParent] }
        return ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []).map {
            "/sys/fs/cgroup/\($0)/\(cgroupParent)"
        }
    }

    /// A client of the TCP listener carrying `token`.
    public func remote(_ token: String? = nil) -> APIClient {
        var http = SocketHTTPClient(host: "127.0.0.1", port: tcpPort!)
        http.bearer = token
        http.receiveTimeout = .seconds(120)
        return APIClient(http: http)
    }

    /// Runs `body` with a fresh daemon and always cleans up.
    public static func with<T>(
        extraEnv: [String: String] = [:], tcp: Bool = false, _ body: (TestDaemon) async throws -> T
    ) async throws -> T {
        let d = try TestDaemon(extraEnv: extraEnv, tcp: tcp)
        do {
            let r = try await body(d)
            d.shutdown()
            return r
        } catch {
            FileHandle.standardError.write(Data("--- daemon log ---\n\(d.log.suffix(4000))\n".utf8))
            d.shutdown()
            throw error
        }
    }
}

extension TestDaemon {
    public func create(_ req: CreateSandboxRequest) throws -> SandboxInfo {
        try client.call("POST", "/v1/sandboxes", body: req)
    }

    public func exec(_ name: String, _ argv: [String], timeout: Double? = nil, user: UInt32? = nil) throws -> ExecResult
    {
        try client.call(
            "POST", "/v1/sandboxes/\(name)/exec", body: ExecRequest(argv: argv, user: user, timeoutSeconds: timeout))
    }

    /// `sh -c script` in the sandbox; returns (exit code, stdout, stderr).
    public func sh(_ name: String, _ script: String, timeout: Double? = nil) throws -> (Int32, String, String) {
        let r = try exec(name, ["/bin/sh", "-c", script], timeout: timeout)
        return (r.exitCode, String(decoding: r.stdout, as: UTF8.self), String(decoding: r.stderr, as: UTF8.self))
    }

    public func get(_ name: String) throws -> SandboxInfo { try client.call("GET", "/v1/sandboxes/\(name)") }

    /// The raw HTTP answer, for error tests.
    public func raw(_ method: String, _ path: String, body: Data? = nil) throws -> (Int, ErrorBody?) {
        let r = try client.http.send(method, path, body: body)
        return (r.status, try? WireCoding.decoder().decode(ErrorBody.self, from: r.body))
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
public func freeLoopbackPort() throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw VivariumError(.unavailable, "socket") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
        }
    }
    guard ok else { throw VivariumError(.unavailable, "no free port") }
    return UInt16(bigEndian: addr.sin_port)
}

/// Expects `body` to throw a `VivariumError` with `code`.
public func expectCode<T>(
    _ code: VivariumError.Code, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> T
) async {
    do {
        _ = try await body()
        Issue.record(
            "expected \(code), nothing was thrown \(comment.map { "(\($0))" } ?? "")", sourceLocation: sourceLocation)
    } catch let e as VivariumError {
        #expect(e.code == code, "\(comment.map { "\($0): " } ?? "")\(e)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
    }
}

/// Expects `body` to throw a `VivariumError` with `code` (synchronous form).
public func expectCode<T>(
    _ code: VivariumError.Code, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> T
) {
    do {
        _ = try body()
        Issue.record(
            "expected \(code), nothing was thrown \(comment.map { "(\($0))" } ?? "")", sourceLocation: sourceLocation)
    } catch let e as VivariumError {
        #expect(e.code == code, "\(comment.map { "\($0): " } ?? "")\(e)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected \(code), got \(error)", sourceLocation: sourceLocation)
    }
}
