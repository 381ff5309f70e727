import Crypto
import Foundation
import VivariumCore
import VivariumImages
import VivariumNetwork
import VivariumOS
import VivariumRuntime

/// Everything the engine needs to know about its host and instance. Every host-wide name (crun root,
/// cgroup parent, user-id range) derives from the state directory, so that instances with different
/// state directories run side by side.
public struct EngineConfiguration: Sendable {
    public var stateDir: String
    public var crunBinary: String
    public var busybox: String
    /// First host uid/gid of this instance's sandbox ranges; sandbox n gets base + n * 65536.
    public var uidBase: Int64
    public var maxSandboxes: Int
    public var cgroupMode: CgroupMode
    public var ttlSweepInterval: Duration
    public var stopTimeout: Duration
    /// Applied to every tenant at create.
    public var quota: TenantQuota
    /// What running sandboxes may hold of the host together; nil: no bound beyond the tenant quotas.
    public var budget: HostBudget?
    /// Execs in flight and the output they may buffer.
    public var execLimits = ExecLimits.default
    /// What every unpacked archive may hold and grow to.
    public var unpackRules = UnpackRules.default
    /// The sandbox network; nil: every sandbox has loopback only.
    public var network: BridgeNetwork?
    /// The domain of the ingress's `PORT-SANDBOXID` host names.
    public var ingressDomain = "localhost"
    /// The registry of references that name none (`registry_default`).
    public var defaultRegistry = ImageReference.dockerHub
    /// The registries (`host[:port]`) or repository prefixes (`host/team`) pulls may use; nil: any.
    public var allowedRegistries: [String]?
    /// Which registry images are admitted: signatures and digests per scope.
    public var imagePolicy = ImagePolicy()
    /// The disk quota of a sandbox whose create names none (`disk_default`).
    public var defaultDiskBytes: Int64 = ResourceLimits.defaultDiskBytes
    /// Audit checkpoints: at least this often, and after this many records.
    public var auditCheckpointInterval: Duration = .seconds(60)
    public var auditCheckpointRecords: Int64 = 1000
    /// The append-only JSON-lines file checkpoints are exported to (default: in the audit directory).
    public var auditExport: String?
    /// Also send checkpoints to syslog (authpriv).
    public var auditSyslog = false

    public init(
        stateDir: String, crunBinary: String = "/usr/bin/crun", busybox: String = "/bin/busybox",
        uidBase: Int64? = nil, maxSandboxes: Int = 1024, cgroupMode: CgroupMode = .detect(),
        ttlSweepInterval: Duration = .seconds(2), stopTimeout: Duration = .seconds(10), quota: TenantQuota = .default
    ) {
        self.quota = quota
        self.stateDir = stateDir
        runtimeDir = "/run/vivarium/" + Self.instanceName(stateDir: stateDir)
        self.crunBinary = crunBinary
        self.busybox = busybox
        self.maxSandboxes = maxSandboxes
        self.uidBase = uidBase ?? Self.defaultUIDBase(stateDir: stateDir, maxSandboxes: maxSandboxes)
        self.cgroupMode = cgroupMode
        self.ttlSweepInterval = ttlSweepInterval
        self.stopTimeout = stopTimeout
    }

    /// A short, stable name of this instance: the first 8 hex digits of SHA-256(state dir).
    public static func instanceName(stateDir: String) -> String {
        String(Digest.of(Array(stateDir.utf8)).hex.prefix(8))
    }
    public var instance: String { Self.instanceName(stateDir: stateDir) }

    /// Instances get disjoint id blocks of maxSandboxes * 65536 ids above 2^28, chosen by the instance
    /// hash (the default state dir always gets block 0). Operators running several instances should
    /// set `uid_base` explicitly to rule out a collision.
    public static func defaultUIDBase(stateDir: String, maxSandboxes: Int) -> Int64 {
        let block = Int64(maxSandboxes) * 65536
        let first: Int64 = 1 << 28
        let slots = (Int64(UInt32.max) - first) / block
        if stateDir == "/var/lib/vivarium" || slots <= 1 { return first }
        let h = Int64(UInt32(instanceName(stateDir: stateDir), radix: 16) ?? 0)
        return first + (h % slots) * block
    }

    /// The tmpfs of runtime state (`runtime_dir`): specs, crun's root, secrets. Default
    /// `/run/vivarium/<instance>`.
    public var runtimeDir: String
    /// The most the runtime tmpfs, and the secrets' tmpfs below it, may hold each.
    public var runtimeBytes: Int64 = 512 << 20
    /// The host uid (and gid) that is root inside the sandbox of id slot `slot`.
    public func uidBase(slot: Int) -> Int64 { uidBase + Int64(slot) * HardenedSpec.idRangeSize }
    public var crunRoot: String { runtimeDir + "/crun" }
    public var specsDir: String { runtimeDir + "/sandboxes" }
    public var secretsDir: String { runtimeDir + "/secrets" }
    /// Where the sandbox init is installed (read-only, reachable by every sandbox's id range).
    public var initBinary: String { stateDir + "/init/vivarium-init" }
    /// The installed keeper of detached commands (root's only).
    public var shimBinary: String { stateDir + "/init/vivarium-shim" }
    public var sandboxesDir: String { stateDir + "/sandboxes" }
    public var imagesDir: String { stateDir + "/images" }
    /// In a 0700 directory: the database (secrets and environments only sealed).
    public var databaseDir: String { stateDir + "/db" }
    public var databasePath: String { databaseDir + "/vivarium.db" }
    public var cgroupParent: String { "vivarium-" + instance }
    /// The audit signing key and the default checkpoint export (0700).
    public var auditDir: String { stateDir + "/audit" }
    public var auditExportPath: String { auditExport ?? auditDir + "/checkpoints.jsonl" }

    public func validate() throws {
        guard uidBase >= 65536, uidBase + Int64(maxSandboxes) * 65536 <= Int64(UInt32.max) else {
            throw VivariumError(
                .invalidArgument, "uid_base must be at least 65536 and leave room for max_sandboxes ranges")
        }
        guard (1...65536).contains(maxSandboxes) else {
            throw VivariumError(.invalidArgument, "max_sandboxes must be between 1 and 65536")
        }
        guard access(crunBinary, X_OK) == 0 else {
            throw VivariumError(.unavailable, "crun binary not found or not executable at \(crunBinary)")
        }
    }
}
