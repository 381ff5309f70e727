import Foundation

/// Memory, CPU and process limits of one sandbox.
public struct ResourceLimits: Codable, Sendable, Equatable {
    public var memoryBytes: Int64
    /// CPU quota in thousandths of a CPU (1500 = 1.5 CPUs).
    public var milliCPUs: Int64
    public var pids: Int64

    public static let `default` = ResourceLimits(memoryBytes: 512 << 20, milliCPUs: 1000, pids: 512)
    public static let memoryRange: ClosedRange<Int64> = (16 << 20)...(1 << 40)
    public static let milliCPURange: ClosedRange<Int64> = 10...256_000
    public static let pidsRange: ClosedRange<Int64> = 8...1_000_000

    public init(memoryBytes: Int64, milliCPUs: Int64, pids: Int64) {
        self.memoryBytes = memoryBytes
        self.milliCPUs = milliCPUs
        self.pids = pids
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
        return self
    }
}

/// What one tenant may hold at most, summed over its sandboxes.
public struct TenantQuota: Sendable, Equatable, Codable {
    public var sandboxes: Int
    public var memoryBytes: Int64
    public var milliCPUs: Int64
    public init(sandboxes: Int, memoryBytes: Int64, milliCPUs: Int64) {
        self.sandboxes = sandboxes
        self.memoryBytes = memoryBytes
        self.milliCPUs = milliCPUs
    }
    public static let `default` = TenantQuota(sandboxes: 100, memoryBytes: 64 << 30, milliCPUs: 32_000)
}

public enum RestartPolicy: String, Codable, Sendable, CaseIterable {
    /// Brought back after a host reboot or when its init dies.
    case always
    case never
}

/// Everything needed to (re)create a sandbox. Stored with the sandbox record.
public struct SandboxSpec: Codable, Sendable, Equatable {
    public var image: ResourceName
    public var limits: ResourceLimits
    public var env: [String: String]
    public var labels: [String: String]
    public var readOnly: Bool
    public var restart: RestartPolicy
    public var ttlSeconds: Int64?

    public init(
        image: ResourceName, limits: ResourceLimits = .default, env: [String: String] = [:],
        labels: [String: String] = [:], readOnly: Bool = false, restart: RestartPolicy = .never,
        ttlSeconds: Int64? = nil
    ) {
        self.image = image
        self.limits = limits
        self.env = env
        self.labels = labels
        self.readOnly = readOnly
        self.restart = restart
        self.ttlSeconds = ttlSeconds
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
            guard v.utf8.count <= 1024, !v.utf8.contains(0) else {
                throw VivariumError(.invalidArgument, "label value of \(k) is too long")
            }
        }
    }

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
