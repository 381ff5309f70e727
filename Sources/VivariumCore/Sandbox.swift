import Foundation

/// Memory, CPU, process and disk limits of one sandbox.
public struct ResourceLimits: Codable, Sendable, Equatable {
    public var memoryBytes: Int64
    /// CPU quota in thousandths of a CPU (1500 = 1.5 CPUs).
    public var milliCPUs: Int64
    public var pids: Int64
    /// The quota of the sandbox's writable layer, data and metadata together (so it also bounds the
    /// number of files it can hold).
    public var diskBytes: Int64

    public static let defaultDiskBytes: Int64 = 1 << 30
    /// A create that names no disk quota: the engine gives it the daemon's default (`disk_default`).
    public static let unsetDiskBytes: Int64 = 0
    public static let `default` = ResourceLimits(memoryBytes: 512 << 20, milliCPUs: 1000, pids: 512)
    public static let memoryRange: ClosedRange<Int64> = (16 << 20)...(1 << 40)
    public static let milliCPURange: ClosedRange<Int64> = 10...256_000
    public static let pidsRange: ClosedRange<Int64> = 8...1_000_000
    public static let diskRange: ClosedRange<Int64> = (16 << 20)...(1 << 44)

    public init(memoryBytes: Int64, milliCPUs: Int64, pids: Int64, diskBytes: Int64 = Self.defaultDiskBytes) {
        self.memoryBytes = memoryBytes
        self.milliCPUs = milliCPUs
        self.pids = pids
        self.diskBytes = diskBytes
    }

    enum CodingKeys: String, CodingKey { case memoryBytes, milliCPUs, pids, diskBytes }

    /// Specs stored before disk quotas existed have no `diskBytes`: they get the default.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        memoryBytes = try c.decode(Int64.self, forKey: .memoryBytes)
        milliCPUs = try c.decode(Int64.self, forKey: .milliCPUs)
        pids = try c.decode(Int64.self, forKey: .pids)
        diskBytes = try c.decodeIfPresent(Int64.self, forKey: .diskBytes) ?? Self.defaultDiskBytes
    }

    public func validated() throws -> ResourceLimits {
        guard Self.memoryRange.contains(memoryBytes) else {
            throw VivariumError(.invalidArgument, "memory must be between 16M and 1T")
        }
        guard Self.milliCPURange.contains(milliCPUs) else {
            throw VivariumError(.invalidArgument, "cpus must be between 0.01 and 256")
        }
        guard Self.pidsRange.contains(pids) else {
            throw VivariumError(.invalidArgument, "pids must be between 8 and 1000000")
        }
        guard diskBytes == Self.unsetDiskBytes || Self.diskRange.contains(diskBytes) else {
            throw VivariumError(.invalidArgument, "disk must be between 16M and 16T")
        }
        return self
    }
}

/// What one tenant may hold at most, summed over its sandboxes.
public struct TenantQuota: Sendable, Equatable, Codable {
    public var sandboxes: Int
    public var memoryBytes: Int64
    public var milliCPUs: Int64
    /// The disk quotas of all the tenant's sandboxes together, stopped ones included (their files stay).
    public var diskBytes: Int64
    public init(sandboxes: Int, memoryBytes: Int64, milliCPUs: Int64, diskBytes: Int64 = 256 << 30) {
        self.sandboxes = sandboxes
        self.memoryBytes = memoryBytes
        self.milliCPUs = milliCPUs
        self.diskBytes = diskBytes
    }
    public static let `default` = TenantQuota(sandboxes: 100, memoryBytes: 64 << 30, milliCPUs: 32_000)
}

/// What the host gives sandboxes, derived from its `pid_max`, memory and CPUs with a reserve kept for
/// the host and the daemon. Counted over running sandboxes (a stopped one holds no processes or memory).
/// - one sandbox: pids ≤ pid_max/8, memory ≤ RAM − reserve, CPUs ≤ the host's;
/// - one tenant's running sandboxes: pids ≤ pid_max/2;
/// - all running sandboxes: memory limits ≤ 4 × RAM (limits are ceilings, rarely all used at once, so
///   they are overcommitted), CPU ≤ 8 × the host's (CPU time is shared, not lost), pids ≤ pid_max − reserve.
/// - disk, when a quota pool exists: one sandbox ≤ the pool's size; the quotas of all *existing* sandboxes
///   (a stopped one keeps its files) ≤ 2 × the pool (`diskOvercommit`; see `admitDisk`).
public struct HostBudget: Sendable, Equatable {
    public var sandboxPids: Int64
    public var sandboxMemoryBytes: Int64
    public var sandboxMilliCPUs: Int64
    public var tenantPids: Int64
    public var totalPids: Int64
    public var totalMemoryBytes: Int64
    public var totalMilliCPUs: Int64
    /// The disk quota pool's size; nil when there is none (disk is then not budgeted, nor limited).
    public var poolBytes: Int64?
    /// Disk quotas are ceilings too, but what a box writes stays until it is deleted: overcommitted 2×,
    /// less than memory. Beyond the pool's real size writes fail with ENOSPC in every box.
    public static let diskOvercommit: Int64 = 2
    public var totalDiskBytes: Int64? { poolBytes.map { $0 * Self.diskOvercommit } }

    public init(pidMax: Int64, memoryBytes: Int64, cpus: Int64, reserveMemoryBytes: Int64, reservePids: Int64) {
        sandboxPids = max(8, pidMax / 8)
        sandboxMemoryBytes = max(16 << 20, memoryBytes - reserveMemoryBytes)
        sandboxMilliCPUs = max(10, cpus * 1000)
        tenantPids = max(8, pidMax / 2)
        totalPids = max(8, pidMax - reservePids)
        totalMemoryBytes = 4 * memoryBytes
        totalMilliCPUs = 8 * cpus * 1000
    }

    /// The default reserves: an eighth of memory (at least 1 GiB) and a quarter of the pids.
    public static func defaultReserveMemory(_ memoryBytes: Int64) -> Int64 { max(1 << 30, memoryBytes / 8) }
    public static func defaultReservePids(_ pidMax: Int64) -> Int64 { pidMax / 4 }

    /// Refuses limits that no sandbox of this host may have (`invalid_argument`).
    public func check(_ l: ResourceLimits) throws {
        if l.pids > sandboxPids {
            throw VivariumError(.invalidArgument, "pids must be at most \(sandboxPids) on this host")
        }
        if l.memoryBytes > sandboxMemoryBytes {
            throw VivariumError(
                .invalidArgument, "memory must be at most \(Quantity.formatBytes(sandboxMemoryBytes)) on this host")
        }
        if l.milliCPUs > sandboxMilliCPUs {
            throw VivariumError(
                .invalidArgument, "cpus must be at most \(Double(sandboxMilliCPUs) / 1000) on this host")
        }
        if let pool = poolBytes, l.diskBytes > pool {
            throw VivariumError(
                .invalidArgument, "disk must be at most \(Quantity.formatBytes(pool)) (the disk pool) on this host")
        }
    }

    /// Refuses creating one more sandbox with `l` when the disk quotas of the existing sandboxes
    /// (`existingDiskBytes`) would exceed the overcommitted pool: `resource_exhausted`. Counted at create
    /// only, over every sandbox whatever its state, because a stopped sandbox's files stay in the pool.
    public func admitDisk(_ l: ResourceLimits, existingDiskBytes: Int64) throws {
        guard let total = totalDiskBytes else { return }
        if existingDiskBytes + l.diskBytes > total {
            throw VivariumError(
                .resourceExhausted,
                "the host's disk budget (\(Quantity.formatBytes(total)), \(Self.diskOvercommit)× the disk pool) is taken by existing sandboxes"
            )
        }
    }

    /// Refuses running one more sandbox with `l` next to what runs already: the tenant's pids budget is
    /// `quota_exceeded`, a full host `resource_exhausted`.
    public func admit(_ l: ResourceLimits, tenant: String, tenantUsage: RunningUsage, hostUsage: RunningUsage) throws {
        if tenantUsage.pids + l.pids > tenantPids {
            throw VivariumError(
                .quotaExceeded,
                "tenant \(tenant)'s running sandboxes would exceed the host's \(tenantPids) pids per tenant")
        }
        if hostUsage.pids + l.pids > totalPids {
            throw VivariumError(
                .resourceExhausted, "the host's pid budget (\(totalPids)) is taken by running sandboxes")
        }
        if hostUsage.memoryBytes + l.memoryBytes > totalMemoryBytes {
            throw VivariumError(
                .resourceExhausted,
                "the host's memory budget (\(Quantity.formatBytes(totalMemoryBytes))) is taken by running sandboxes")
        }
        if hostUsage.milliCPUs + l.milliCPUs > totalMilliCPUs {
            throw VivariumError(
                .resourceExhausted,
                "the host's CPU budget (\(Double(totalMilliCPUs) / 1000) CPUs) is taken by running sandboxes")
        }
    }
}

/// The limits of running sandboxes, summed.
public struct RunningUsage: Sendable, Equatable {
    public var pids: Int64
    public var memoryBytes: Int64
    public var milliCPUs: Int64
    public init(pids: Int64 = 0, memoryBytes: Int64 = 0, milliCPUs: Int64 = 0) {
        self.pids = pids
        self.memoryBytes = memoryBytes
        self.milliCPUs = milliCPUs
    }
    public static func + (a: RunningUsage, b: RunningUsage) -> RunningUsage {
        RunningUsage(
            pids: a.pids + b.pids, memoryBytes: a.memoryBytes + b.memoryBytes, milliCPUs: a.milliCPUs + b.milliCPUs)
    }
    public static func + (a: RunningUsage, b: ResourceLimits) -> RunningUsage {
        RunningUsage(
            pids: a.pids + b.pids, memoryBytes: a.memoryBytes + b.memoryBytes, milliCPUs: a.milliCPUs + b.milliCPUs)
    }
}

public enum RestartPolicy: String, Codable, Sendable, CaseIterable {
    /// Brought back after a host reboot or when its init dies.
    case always
    case never
}

/// Everything needed to (re)create a sandbox. Stored with the sandbox record.
public struct SandboxSpec: Codable, Sendable, Equatable {
    public var image: ImageReference
    public var limits: ResourceLimits
    public var env: [String: String]
    public var labels: [String: String]
    public var readOnly: Bool
    public var restart: RestartPolicy
    public var ttlSeconds: Int64?
    /// What the sandbox's network may reach; nil: the daemon's default at create (a spec stored before
    /// sandboxes had networks has none, and keeps loopback only).
    public var network: NetworkPolicy?

    public init(
        image: ImageReference, limits: ResourceLimits = .default, env: [String: String] = [:],
        labels: [String: String] = [:], readOnly: Bool = false, restart: RestartPolicy = .never,
        ttlSeconds: Int64? = nil, network: NetworkPolicy? = nil
    ) {
        self.network = network
        self.image = image
        self.limits = limits
        self.env = env
        self.labels = labels
        self.readOnly = readOnly
        self.restart = restart
        self.ttlSeconds = ttlSeconds
    }

    public static let maxTTLSeconds: Int64 = 366 * 86400

    /// Checks every bound: limits, environment, labels, TTL.
    public func validated() throws -> SandboxSpec {
        var s = self
        s.limits = try limits.validated()
        s.network = try network?.validated()
        try FieldRules.validateEnv(env)
        try FieldRules.validateLabels(labels)
        if let ttl = ttlSeconds, !(1...Self.maxTTLSeconds).contains(ttl) {
            throw VivariumError(.invalidArgument, "ttl must be between 1 second and 366 days")
        }
        return s
    }
}

/// The sandbox lifecycle. Transitions: creating → running ⇄ stopped; any → deleting → (gone).
public enum SandboxState: Sendable, Equatable {
    case creating
    case running(pid: Int32)
    case stopped
    case deleting

    public var name: String {
        switch self {
        case .creating: "creating"
        case .running: "running"
        case .stopped: "stopped"
        case .deleting: "deleting"
        }
    }

    public var pid: Int32? {
        if case .running(let pid) = self { return pid }
        return nil
    }

    public init(name: String, pid: Int32?) throws {
        switch name {
        case "creating": self = .creating
        case "running":
            guard let pid else { throw VivariumError(.internalError, "running sandbox without a pid") }
            self = .running(pid: pid)
        case "stopped": self = .stopped
        case "deleting": self = .deleting
        default: throw VivariumError(.internalError, "unknown sandbox state \(name)")
        }
    }

    /// The init pid of a running sandbox; throws `invalid_state` otherwise.
    public func requireRunning() throws -> Int32 {
        guard case .running(let pid) = self else {
            throw VivariumError(.invalidState, "sandbox must be running (it is \(name))")
        }
        return pid
    }

    public func requireStopped() throws {
        guard case .stopped = self else {
            throw VivariumError(.invalidState, "sandbox must be stopped (it is \(name))")
        }
    }
}

/// Validation of environment variables and labels at the boundary.
public enum FieldRules {
    public static let maxEnv = 128
    public static let maxLabels = 64
    public static let maxKey = 128
    public static let maxValue = 4096

    public static func validateEnv(_ env: [String: String]) throws {
        guard env.count <= maxEnv else { throw VivariumError(.invalidArgument, "at most \(maxEnv) env variables") }
        for (k, v) in env {
            guard !k.isEmpty, k.utf8.count <= maxKey,
                k.utf8.allSatisfy({
                    ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 95
                }),
                !(k.utf8.first! >= 48 && k.utf8.first! <= 57)
            else {
                throw VivariumError(.invalidArgument, "invalid env name '\(k.prefix(64))': use letters, digits and '_'")
            }
            guard v.utf8.count <= maxValue, !v.utf8.contains(0) else {
                throw VivariumError(.invalidArgument, "env value of \(k) is too long or holds a NUL byte")
            }
        }
    }

    public static func validateLabels(_ labels: [String: String]) throws {
        guard labels.count <= maxLabels else {
            throw VivariumError(.invalidArgument, "at most \(maxLabels) labels")
        }
        for (k, v) in labels {
            guard !k.isEmpty, k.utf8.count <= maxKey,
                k.utf8.allSatisfy({
                    ($0 >= 97 && $0 <= 122) || ($0 >= 65 && $0 <= 90) || ($0 >= 48 && $0 <= 57) || $0 == 45 || $0 == 46
                        || $0 == 95 || $0 == 47
                })
            else { throw VivariumError(.invalidArgument, "invalid label key '\(k.prefix(64))'") }
            guard v.utf8.count <= 1024 else {
                throw VivariumError(.invalidArgument, "label value of \(k) is too long")
            }
            // ESC, BEL, CR and the like would reach an operator's terminal through `inspect`.
            guard !v.unicodeScalars.contains(where: isControl) else {
                throw VivariumError(.invalidArgument, "label value of \(k) holds a control character")
            }
        }
    }

    /// C0 and C1 control characters and DEL.
    public static func isControl(_ s: Unicode.Scalar) -> Bool { s.value < 0x20 || (0x7F...0x9F).contains(s.value) }

    /// Parses repeated `K=V` command-line values.
    public static func parsePairs(_ items: [String], what: String) throws -> [String: String] {
        var out: [String: String] = [:]
        for item in items {
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
                throw VivariumError(.invalidArgument, "\(what) must be K=V, got '\(item.prefix(64))'")
            }
            out[String(item[..<eq])] = String(item[item.index(after: eq)...])
        }
        return out
    }
}

/// A sandbox as callers see it: what was asked for, its state, and the host facts worth knowing.
public struct Sandbox: Sendable, Equatable {
    public var id: SandboxID
    public var tenant: String
    public var name: ResourceName
    public var imageDigest: Digest
    public var spec: SandboxSpec
    public var state: SandboxState
    public var createdAt: Date
    public var expiresAt: Date?
    /// The first host uid of the sandbox's id range (uid 0 inside).
    public var hostUIDBase: Int64
    /// Bytes in the sandbox's writable layer (filled for a single-sandbox read).
    public var diskUsageBytes: Int64?
    /// The sandbox's IPv4 address on the bridge; nil with loopback only.
    public var address: String?
    /// Packets the egress policy dropped since the daemon started (filled for a single-sandbox read of
    /// a running sandbox with a veth).
    public var deniedPackets: Int64?

    public init(
        id: SandboxID, tenant: String, name: ResourceName, imageDigest: Digest, spec: SandboxSpec,
        state: SandboxState, createdAt: Date, expiresAt: Date?, hostUIDBase: Int64, diskUsageBytes: Int64? = nil,
        address: String? = nil
    ) {
        self.address = address
        self.id = id
        self.tenant = tenant
        self.name = name
        self.imageDigest = imageDigest
        self.spec = spec
        self.state = state
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.hostUIDBase = hostUIDBase
        self.diskUsageBytes = diskUsageBytes
    }
}

/// A command to run in a sandbox, validated: every bound is checked when it is made.
public struct ExecCommand: Sendable, Equatable {
    public static let maxArgs = 4096
    public static let maxArgvBytes = 256 << 10
    public static let defaultTimeout = Duration.seconds(60)
    public static let maxTimeout = Duration.seconds(24 * 3600)
    public static let defaultMaxOutput = 1 << 20
    public static let maxOutputCap = 16 << 20

    public let argv: [String]
    public let env: [String: String]
    public let workdir: String
    public let user: UInt32
    public let timeout: Duration
    /// Bytes kept of each of stdout and stderr.
    public let maxOutputBytes: Int

    /// `shell` runs the words joined by spaces through `/bin/sh -c`.
    public init(
        argv: [String], shell: Bool = false, env: [String: String] = [:], workdir: String? = nil, user: UInt32? = nil,
        timeout: Duration? = nil, maxOutputBytes: Int? = nil
    ) throws {
        guard !argv.isEmpty, !argv[0].isEmpty else { throw VivariumError(.invalidArgument, "argv must name a command") }
        guard argv.count <= Self.maxArgs, argv.reduce(0, { $0 + $1.utf8.count }) <= Self.maxArgvBytes,
            argv.allSatisfy({ !$0.utf8.contains(0) })
        else { throw VivariumError(.invalidArgument, "argv is too long or holds a NUL byte") }
        try FieldRules.validateEnv(env)
        if let w = workdir {
            guard w.hasPrefix("/"), w.utf8.count <= 4096, !w.utf8.contains(0) else {
                throw VivariumError(.invalidArgument, "workdir must be an absolute path")
            }
        }
        if let t = timeout, !(t > .zero && t <= Self.maxTimeout) {
            throw VivariumError(
                .invalidArgument, "timeout must be between 0 and \(Self.maxTimeout.components.seconds) seconds")
        }
        if let m = maxOutputBytes, !(0...Self.maxOutputCap).contains(m) {
            throw VivariumError(.invalidArgument, "max_output_bytes must be between 0 and \(Self.maxOutputCap)")
        }
        if let u = user, u > 65535 {
            throw VivariumError(.invalidArgument, "user must be a uid inside the sandbox (0-65535)")
        }
        self.argv = shell ? ["/bin/sh", "-c", argv.joined(separator: " ")] : argv
        self.env = env
        self.workdir = workdir ?? "/"
        self.user = user ?? 0
        self.timeout = timeout ?? Self.defaultTimeout
        self.maxOutputBytes = maxOutputBytes ?? Self.defaultMaxOutput
    }
}

/// How a command in a sandbox ended, with its (capped) output.
public struct ExecOutcome: Sendable, Equatable {
    public var exitCode: Int32
    public var stdout: [UInt8]
    public var stderr: [UInt8]
    public var stdoutTruncated: Bool
    public var stderrTruncated: Bool
    /// The timeout fired and every process of the command was killed.
    public var timedOut: Bool
    public var duration: Duration

    public init(
        exitCode: Int32, stdout: [UInt8], stderr: [UInt8], stdoutTruncated: Bool, stderrTruncated: Bool,
        timedOut: Bool, duration: Duration
    ) {
        self.exitCode = exitCode
        self.stdout = stdout
        self.stderr = stderr
        self.stdoutTruncated = stdoutTruncated
        self.stderrTruncated = stderrTruncated
        self.timedOut = timedOut
        self.duration = duration
    }
}

extension Duration {
    /// Milliseconds as a floating-point number.
    public var milliseconds: Double {
        Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15
    }
}
