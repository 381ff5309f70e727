import ArgumentParser
import Foundation
import TOMLKit
import VivariumAudit
import VivariumCore
import VivariumEngine
import VivariumImages
import VivariumOS
import VivariumRuntime

/// Options every verb shares: where the daemon's socket and state are, and which config file to read.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Config file (TOML). Default: /etc/vivarium/config.toml when it exists.")
    var config: String?

    @Option(name: .long, help: "State directory (env VIVARIUM_STATE_DIR). Default: /var/lib/vivarium.")
    var stateDir: String?

    @Option(name: .long, help: "API unix socket (env VIVARIUM_SOCKET). Default: /run/vivarium/vivarium.sock.")
    var socket: String?
}

/// The daemon's effective settings. Precedence: flags, then environment variables, then the config
/// file, then defaults.
struct Settings {
    var stateDir = "/var/lib/vivarium"
    var socket = "/run/vivarium/vivarium.sock"
    var crun = "/usr/bin/crun"
    /// A static init to install instead of the one built into the binary.
    var initBinary: String?
    var busybox = "/bin/busybox"
    var uidBase: Int64?
    var maxSandboxes = 1024
    var logLevel = "info"
    var stopTimeoutSeconds = 10
    var ttlSweepSeconds = 2
    var uidRegistry = "/var/lib/vivarium-uid-ranges.json"
    /// TCP listener, "HOST:PORT"; none by default (the unix socket only).
    var listen: String?
    /// Serve plain HTTP on `listen` (loopback addresses only) instead of TLS.
    var insecureHTTP = false
    /// Operator-provided certificate chain and key (PEM); a self-signed pair is made otherwise.
    var tlsCert: String?
    var tlsKey: String?
    var accessTokenSeconds = 900
    var quota = TenantQuota.default
    /// The host facts the budget derives from (default: pid_max, physical memory, online CPUs) and the
    /// reserves kept for the host and the daemon (default: see `HostBudget`).
    var hostPids: Int64?
    var hostMemory: Int64?
    var hostCPUs: Int64?
    var reserveMemory: Int64?
    var reservePids: Int64?
    var execLimits = ExecLimits.default
    var unpackRules = UnpackRules.default
    var authFailuresPerMinute = 10
    var requestsPerSecond = 100
    var requestBurst = 200
    var trustedProxies: [CIDR] = []
    var adminAllowlist: [CIDR] = []
    var maxAccessTokenSeconds = 3600
    var auditMode = AuditMode.required
    var auditCheckpointSeconds = 60
    var auditCheckpointRecords = 1000
    /// Where checkpoints are exported (JSON lines); default: <state_dir>/audit/checkpoints.jsonl.
    var auditExport: String?
    var auditSyslog = false
    var configFile: String?
    /// Where sandboxes' writable layers get their disk quotas: empty for a preallocated btrfs image at
    /// <state_dir>/pool.img, a block device or a directory on btrfs the operator provides, or "off".
    var diskPool = ""
    var diskPoolSize: Int64 = 16 << 30
    /// The disk quota of a sandbox whose create names none.
    var diskDefault = ResourceLimits.defaultDiskBytes
    /// `bridge` (the default): sandboxes get a veth on this instance's bridge, under the nftables egress
    /// policy, with DNS through the gateway; `off`: loopback only, for every sandbox.
    var network = "bridge"
    var networkRange = try! CIDR("10.213.0.0/16")
    /// A network namespace (/run/netns/NAME) that stands in for the host: the bridge, the ruleset and
    /// forwarding live there (tests); empty: the daemon's own.
    var networkNetns: String?
    /// The resolver the sandboxes' DNS forwarder relays to (ADDRESS[:PORT]); nil: the host's first
    /// IPv4 nameserver.
    var networkDNS: String?
    /// The ingress listener, "HOST:PORT" (TLS with the daemon's certificate): published sandbox ports are
    /// served there; none by default.
    var ingress: String?
    /// The domain of the ingress's `PORT-SANDBOXID.DOMAIN` host names.
    var ingressDomain = "localhost"
    /// A directory of `NAME.crt` + `NAME.key` pairs the ingress serves by SNI (their DNS names); nil: the
    /// daemon's certificate for every host name.
    var ingressCerts: String?
    /// Where references without a registry are pulled from.
    var registryDefault = ImageReference.dockerHub
    /// PEM CA certificates trusted for registries, besides the system's.
    var registryCA: String?
    /// The registries or repository prefixes pulls may use (comma-separated; empty: none); nil: any.
    var registryAllowed: [String]?
    /// Registries (`host:port`, loopback addresses only) spoken to over plain HTTP.
    var registryPlainHTTP: Set<String> = []
    /// Pull mirrors per registry, tried in order before it.
    var registryMirrors: [String: [String]] = [:]
    /// The image admission policy file (TOML): signatures and digests per registry scope.
    var imagePolicy: String?
    /// The tmpfs the daemon mounts for runtime specs, crun's state and sandboxes' secrets; nil:
    /// /run/vivarium/<instance>.
    var runtimeDir: String?
    /// Where key-encryption keys live: `local` (a keyring file) or `transit` (a Vault Transit API server).
    var kms = "local"
    /// The local keyring; nil: <state_dir>/kms/keyring.json.
    var kmsKeyring: String?
    var kmsAddress: String?
    var kmsMount = "transit"
    var kmsKey = "vivarium"
    var kmsTokenFile: String?
    var kmsCA: String?

    /// Keys accepted in the config file and as VIVARIUM_<KEY> environment variables.
    static let keys = [
        "state_dir", "socket", "crun", "init", "busybox", "uid_base", "max_sandboxes", "log_level",
        "stop_timeout_seconds", "ttl_sweep_seconds", "uid_registry", "listen", "insecure_http", "tls_cert", "tls_key",
        "access_token_seconds", "max_access_token_seconds", "quota_sandboxes", "quota_memory", "quota_cpus",
        "quota_disk",
        "auth_failures_per_minute", "requests_per_second", "request_burst", "trusted_proxies", "admin_allowlist",
        "audit_mode", "audit_checkpoint_seconds", "audit_checkpoint_records", "audit_export", "audit_syslog",
        "host_pids", "host_memory", "host_cpus", "reserve_memory", "reserve_pids", "max_execs_per_sandbox",
        "max_execs_per_tenant", "max_execs", "exec_output_budget", "image_max_bytes", "image_max_entries",
        "image_max_ratio", "image_keep_setid", "disk_pool", "disk_pool_size", "disk_default",
        "network", "network_range", "network_netns", "network_dns", "ingress", "ingress_domain", "ingress_certs",
        "registry_default", "registry_ca", "registry_plain_http", "registry_allowed", "registry_mirrors",
        "image_policy",
        "runtime_dir", "kms",
        "kms_keyring", "kms_address", "kms_mount", "kms_key", "kms_token_file", "kms_ca",
    ]

    /// The host budget: the configured host facts, or this host's.
    var budget: HostBudget {
        let pids = hostPids ?? HostFacts.pidMax()
        let memory = hostMemory ?? Int64(ProcessInfo.processInfo.physicalMemory)
        var b = HostBudget(
            pidMax: pids, memoryBytes: memory, cpus: hostCPUs ?? Int64(ProcessInfo.processInfo.activeProcessorCount),
            reserveMemoryBytes: reserveMemory ?? HostBudget.defaultReserveMemory(memory),
            reservePids: reservePids ?? HostBudget.defaultReservePids(pids))
        // The pool's real size is known once it is open (`serve` sets it); the image's is configured.
        b.poolBytes = diskPool.isEmpty ? diskPoolSize : nil
        return b
    }

    /// The disk pool as configured: nil when off.
    var diskPoolSource: BtrfsPool.Source? {
        if diskPool == "off" { return nil }
        if diskPool.isEmpty { return .image(path: stateDir + "/pool.img", sizeBytes: diskPoolSize) }
        var st = stat()
        if stat(diskPool, &st) == 0, (st.st_mode & S_IFMT) == S_IFBLK { return .device(diskPool) }
        return .directory(diskPool)
    }

    static func resolve(_ g: GlobalOptions, overrides: [String: String] = [:]) throws -> Settings {
        var s = Settings()
        let env = ProcessInfo.processInfo.environment
        let explicit = g.config ?? env["VIVARIUM_CONFIG"]
        let path = explicit ?? "/etc/vivarium/config.toml"
        if FileManager.default.fileExists(atPath: path) {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw VivariumError(.invalidArgument, "cannot read config file \(path)")
            }
            let table: TOMLTable
            do { table = try TOMLTable(string: text) } catch {
                throw VivariumError(.invalidArgument, "config file \(path) is not valid TOML: \(error)")
            }
            for key in table.keys {
                guard keys.contains(key), let v = table[key] else {
                    throw VivariumError(
                        .invalidArgument, "unknown setting '\(key)' in \(path); known: \(keys.joined(separator: ", "))")
                }
                let value = v.string ?? v.int.map(String.init) ?? v.bool.map(String.init)
                guard let value else {
                    throw VivariumError(.invalidArgument, "setting '\(key)' in \(path) has an unsupported type")
                }
                try s.set(key, value)
            }
            s.configFile = path
        } else if explicit != nil {
            throw VivariumError(.invalidArgument, "config file \(path) does not exist")
        }
        for key in keys {
            if let v = env["VIVARIUM_" + key.uppercased()] { try s.set(key, v) }
        }
        if let v = g.stateDir { try s.set("state_dir", v) }
        if let v = g.socket { try s.set("socket", v) }
        for (k, v) in overrides { try s.set(k, v) }
        return s
    }

    mutating func set(_ key: String, _ value: String) throws {
        func int(_ range: ClosedRange<Int64>) throws -> Int64 {
            guard let n = Int64(value), range.contains(n) else {
                throw VivariumError(
                    .invalidArgument, "\(key) must be a number in \(range.lowerBound)...\(range.upperBound)")
            }
            return n
        }
        func bool() throws -> Bool {
            guard let b = Bool(value) else { throw VivariumError(.invalidArgument, "\(key) must be true or false") }
            return b
        }
        func path() throws -> String {
            guard value.hasPrefix("/"), value.utf8.count < 4096 else {
                throw VivariumError(.invalidArgument, "\(key) must be an absolute path")
            }
            return value
        }
        switch key {
        case "state_dir": stateDir = try path()
        case "socket":
            socket = try path()
            guard socket.utf8.count < 108 else {
                throw VivariumError(.invalidArgument, "socket path must be under 108 bytes")
            }
        case "crun": crun = try path()
        case "init": initBinary = try path()
        case "busybox": busybox = try path()
        case "uid_base": uidBase = try int(65536...Int64(UInt32.max))
        case "max_sandboxes": maxSandboxes = Int(try int(1...65536))
        case "log_level":
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(value) else {
                throw VivariumError(
                    .invalidArgument, "log_level must be trace, debug, info, notice, warning, error or critical")
            }
            logLevel = value
        case "stop_timeout_seconds": stopTimeoutSeconds = Int(try int(0...3600))
        case "ttl_sweep_seconds": ttlSweepSeconds = Int(try int(1...3600))
        case "uid_registry": uidRegistry = try path()
        case "listen":
            guard value.utf8.count < 256, let colon = value.lastIndex(of: ":"),
                Int(value[value.index(after: colon)...]) != nil
            else { throw VivariumError(.invalidArgument, "listen must be HOST:PORT") }
            listen = value
        case "insecure_http": insecureHTTP = try bool()
        case "ingress":
            guard value.utf8.count < 256, let colon = value.lastIndex(of: ":"),
                let port = Int(value[value.index(after: colon)...]), (1...65535).contains(port)
            else { throw VivariumError(.invalidArgument, "ingress must be HOST:PORT") }
            ingress = value.isEmpty ? nil : value
        case "ingress_domain": ingressDomain = try PortRoute.hostname(value)
        case "runtime_dir": runtimeDir = try path()
        case "registry_default":
            guard (try? ImageReference.parse(value + "/x"))?.registry == value else {
                throw VivariumError(.invalidArgument, "registry_default must be a registry host[:port]")
            }
            registryDefault = value
        case "registry_ca": registryCA = try path()
        case "registry_allowed":
            let scopes = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter {
                !$0.isEmpty
            }
            for scope in scopes where (try? ImageReference.parse(scope + "/x"))?.registry == nil {
                throw VivariumError(
                    .invalidArgument, "registry_allowed takes registries or registry/repository prefixes, not \(scope)")
            }
            registryAllowed = scopes
        case "registry_plain_http":
            let hosts = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter {
                !$0.isEmpty
            }
            for h in hosts where !RegistryOptions.isLoopback(h) {
                throw VivariumError(.invalidArgument, "registry_plain_http takes loopback registries only, not \(h)")
            }
            registryPlainHTTP = Set(hosts)
        case "registry_mirrors":
            // registry=mirror,mirror;registry=mirror
            var mirrors: [String: [String]] = [:]
            for group in value.split(separator: ";").map({ $0.trimmingCharacters(in: .whitespaces) })
            where !group.isEmpty {
                let parts = group.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                let hosts =
                    parts.count == 2
                    ? parts[1].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } : []
                let all = parts.prefix(1) + hosts
                guard parts.count == 2, !hosts.isEmpty, hosts.count <= 8,
                    all.allSatisfy({ (try? ImageReference.parse($0 + "/x"))?.registry == $0 })
                else {
                    throw VivariumError(
                        .invalidArgument,
                        "registry_mirrors takes REGISTRY=MIRROR[,MIRROR…][;REGISTRY=…] with registry hosts, not \(group)"
                    )
                }
                mirrors[parts[0]] = hosts
            }
            registryMirrors = mirrors
        case "ingress_certs": ingressCerts = try path()
        case "image_policy": imagePolicy = try path()
        case "kms":
            guard ["local", "transit"].contains(value) else {
                throw VivariumError(.invalidArgument, "kms must be local or transit")
            }
            kms = value
        case "kms_keyring": kmsKeyring = try path()
        case "kms_address":
            guard value.utf8.count < 256, value.hasPrefix("http://") || value.hasPrefix("https://") else {
                throw VivariumError(.invalidArgument, "kms_address must be http(s)://HOST:PORT")
            }
            kmsAddress = value.hasSuffix("/") ? String(value.dropLast()) : value
        case "kms_mount": kmsMount = value
        case "kms_key": kmsKey = value
        case "kms_token_file": kmsTokenFile = try path()
        case "kms_ca": kmsCA = try path()
        case "audit_mode":
            guard let m = AuditMode(rawValue: value) else {
                throw VivariumError(.invalidArgument, "audit_mode must be required, fail-open or off")
            }
            auditMode = m
        case "audit_checkpoint_seconds": auditCheckpointSeconds = Int(try int(1...3600))
        case "audit_checkpoint_records": auditCheckpointRecords = Int(try int(1...1_000_000))
        case "audit_export": auditExport = try path()
        case "audit_syslog": auditSyslog = try bool()
        case "host_pids": hostPids = try int(64...4_194_304)
        case "host_memory": hostMemory = try Quantity.parseBytes(value)
        case "host_cpus": hostCPUs = try int(1...4096)
        case "reserve_memory": reserveMemory = try Quantity.parseBytes(value)
        case "reserve_pids": reservePids = try int(0...4_194_304)
        case "image_max_bytes": unpackRules.maxBytes = try Quantity.parseBytes(value)
        case "image_max_entries": unpackRules.maxEntries = Int(try int(1...100_000_000))
        case "image_max_ratio": unpackRules.maxRatio = try int(2...100_000)
        case "image_keep_setid": unpackRules.keepSetID = try bool()
        case "max_execs_per_sandbox": execLimits.perSandbox = Int(try int(1...10_000))
        case "max_execs_per_tenant": execLimits.perTenant = Int(try int(1...100_000))
        case "max_execs": execLimits.total = Int(try int(1...100_000))
        case "exec_output_budget":
            execLimits.outputBytes = try Quantity.parseBytes(value)
            guard execLimits.outputBytes >= 2 * Int64(ExecCommand.maxOutputCap) else {
                throw VivariumError(.invalidArgument, "exec_output_budget must hold one exec at the cap: at least 32M")
            }
        case "quota_sandboxes": quota.sandboxes = Int(try int(0...1_000_000))
        case "quota_memory": quota.memoryBytes = try Quantity.parseBytes(value)
        case "quota_disk": quota.diskBytes = try Quantity.parseBytes(value)
        case "quota_cpus":
            guard let c = Double(value), c >= 0, c <= 100_000 else {
                throw VivariumError(.invalidArgument, "quota_cpus must be a number of CPUs")
            }
            quota.milliCPUs = Int64((c * 1000).rounded())
        case "auth_failures_per_minute": authFailuresPerMinute = Int(try int(1...100_000))
        case "requests_per_second": requestsPerSecond = Int(try int(1...10_000_000))
        case "request_burst": requestBurst = Int(try int(1...10_000_000))
        case "trusted_proxies": trustedProxies = try CIDR.parseList(value)
        case "admin_allowlist": adminAllowlist = try CIDR.parseList(value)
        case "tls_cert": tlsCert = try path()
        case "tls_key": tlsKey = try path()
        case "disk_pool":
            guard value == "off" || value.isEmpty || (value.hasPrefix("/") && value.utf8.count < 4096) else {
                throw VivariumError(
                    .invalidArgument, "disk_pool must be off, empty (the default image) or an absolute path")
            }
            diskPool = value
        case "disk_pool_size":
            diskPoolSize = try Quantity.parseBytes(value)
            // btrfs needs about 110 MiB; a pool below 256 MiB holds hardly a sandbox.
            guard diskPoolSize >= 256 << 20 else {
                throw VivariumError(.invalidArgument, "disk_pool_size must be at least 256M")
            }
        case "network":
            guard ["off", "bridge"].contains(value) else {
                throw VivariumError(.invalidArgument, "network must be off or bridge")
            }
            network = value
        case "network_range":
            networkRange = try CIDR(value)
            guard networkRange.bytes.count == 4, (8...24).contains(networkRange.prefix) else {
                throw VivariumError(.invalidArgument, "network_range must be an IPv4 range from /8 to /24")
            }
        case "network_netns": networkNetns = value.isEmpty ? nil : try path()
        case "network_dns":
            guard value.split(separator: ":").count <= 2,
                CIDR.parseAddress(String(value.split(separator: ":")[0]))?.count == 4
            else { throw VivariumError(.invalidArgument, "network_dns must be ADDRESS[:PORT] (IPv4)") }
            networkDNS = value
        case "disk_default":
            diskDefault = try Quantity.parseBytes(value)
            guard ResourceLimits.diskRange.contains(diskDefault) else {
                throw VivariumError(.invalidArgument, "disk_default must be between 16M and 16T")
            }
        case "access_token_seconds": accessTokenSeconds = Int(try int(5...86400))
        case "max_access_token_seconds": maxAccessTokenSeconds = Int(try int(60...86400))
        default: throw VivariumError(.invalidArgument, "unknown setting \(key)")
        }
    }

    /// The settings that weaken a secure default, recorded in the audit trail at every start.
    var weakened: [AuditTrail.WeakenedSetting] {
        let d = Settings()
        var out: [AuditTrail.WeakenedSetting] = []
        func add(_ key: String, _ value: String, _ secureDefault: String) {
            out.append(.init(key: key, value: value, secureDefault: secureDefault))
        }
        if insecureHTTP && listen != nil { add("insecure_http", "true", "false") }
        if auditMode != d.auditMode { add("audit_mode", auditMode.rawValue, d.auditMode.rawValue) }
        if diskPool == "off" { add("disk_pool", "off", "a btrfs pool with a quota per sandbox") }
        if !trustedProxies.isEmpty {
            add("trusted_proxies", trustedProxies.map(\.description).joined(separator: ","), "none")
        }
        for (key, value, secureDefault) in [
            ("access_token_seconds", accessTokenSeconds, d.accessTokenSeconds),
            ("max_access_token_seconds", maxAccessTokenSeconds, d.maxAccessTokenSeconds),
            ("auth_failures_per_minute", authFailuresPerMinute, d.authFailuresPerMinute),
            ("audit_checkpoint_seconds", auditCheckpointSeconds, d.auditCheckpointSeconds),
            ("audit_checkpoint_records", auditCheckpointRecords, d.auditCheckpointRecords),
        ] where value > secureDefault {
            add(key, String(value), String(secureDefault))
        }
        return out
    }
}
