import Foundation

/// The subset of the OCI runtime specification (config.json, and the process JSON of `crun exec --process`)
/// that Vivarium writes.
public struct RuntimeSpec: Codable, Sendable {
    public var ociVersion = "1.0.2"
    public var process: Process
    public var root: Root
    public var hostname: String
    public var mounts: [Mount]
    public var linux: Linux

    public struct Process: Codable, Sendable {
        public var terminal = false
        /// The terminal's initial size, when `terminal`.
        public var consoleSize: ConsoleSize?
        public var user: User
        public var args: [String]
        public var env: [String]
        public var cwd: String
        public var capabilities: Capabilities
        public var rlimits: [Rlimit]
        public var noNewPrivileges = true
        public var oomScoreAdj: Int?
        public init(
            terminal: Bool = false, consoleSize: ConsoleSize? = nil, user: User, args: [String], env: [String],
            cwd: String, capabilities: Capabilities, rlimits: [Rlimit], noNewPrivileges: Bool = true,
            oomScoreAdj: Int? = nil
        ) {
            self.terminal = terminal
            self.consoleSize = consoleSize
            self.user = user
            self.args = args
            self.env = env
            self.cwd = cwd
            self.capabilities = capabilities
            self.rlimits = rlimits
            self.noNewPrivileges = noNewPrivileges
            self.oomScoreAdj = oomScoreAdj
        }
    }
    public struct ConsoleSize: Codable, Sendable, Equatable {
        public var height: UInt16
        public var width: UInt16
        public init(height: UInt16, width: UInt16) {
            self.height = height
            self.width = width
        }
    }
    public struct User: Codable, Sendable {
        public var uid: UInt32
        public var gid: UInt32
        public init(uid: UInt32, gid: UInt32) {
            self.uid = uid
            self.gid = gid
        }
    }
    public struct Capabilities: Codable, Sendable {
        public var bounding: [String]
        public var effective: [String]
        public var permitted: [String]
        public var inheritable: [String] = []
        public var ambient: [String] = []
        public init(
            bounding: [String], effective: [String], permitted: [String], inheritable: [String] = [],
            ambient: [String] = []
        ) {
            self.bounding = bounding
            self.effective = effective
            self.permitted = permitted
            self.inheritable = inheritable
            self.ambient = ambient
        }
    }
    public struct Rlimit: Codable, Sendable {
        public var type: String
        public var hard: UInt64
        public var soft: UInt64
        public init(type: String, hard: UInt64, soft: UInt64) {
            self.type = type
            self.hard = hard
            self.soft = soft
        }
    }
    public struct Root: Codable, Sendable {
        public var path: String
        public var readonly: Bool
        public init(path: String, readonly: Bool) {
            self.path = path
            self.readonly = readonly
        }
    }
    public struct Mount: Codable, Sendable {
        public var destination: String
        public var type: String
        public var source: String
        public var options: [String]
        public init(destination: String, type: String, source: String, options: [String]) {
            self.destination = destination
            self.type = type
            self.source = source
            self.options = options
        }
    }
    public struct IDMapping: Codable, Sendable {
        public var containerID: UInt32
        public var hostID: UInt32
        public var size: UInt32
        public init(containerID: UInt32, hostID: UInt32, size: UInt32) {
            self.containerID = containerID
            self.hostID = hostID
            self.size = size
        }
    }
    public struct Namespace: Codable, Sendable {
        public var type: String
        public init(type: String) {
            self.type = type
        }
    }
    public struct Linux: Codable, Sendable {
        public var uidMappings: [IDMapping]
        public var gidMappings: [IDMapping]
        public var namespaces: [Namespace]
        public var cgroupsPath: String
        public var resources: Resources
        public var seccomp: Seccomp
        public var maskedPaths: [String]
        public var readonlyPaths: [String]
        /// Namespaced sysctls the runtime sets inside the container.
        public var sysctl: [String: String]?
        public init(
            uidMappings: [IDMapping], gidMappings: [IDMapping], namespaces: [Namespace], cgroupsPath: String,
            resources: Resources, seccomp: Seccomp, maskedPaths: [String], readonlyPaths: [String],
            sysctl: [String: String]? = nil
        ) {
            self.sysctl = sysctl
            self.uidMappings = uidMappings
            self.gidMappings = gidMappings
            self.namespaces = namespaces
            self.cgroupsPath = cgroupsPath
            self.resources = resources
            self.seccomp = seccomp
            self.maskedPaths = maskedPaths
            self.readonlyPaths = readonlyPaths
        }
    }
    public struct Resources: Codable, Sendable {
        public var memory: Memory
        public var cpu: CPU
        public var pids: Pids
        public var devices: [DeviceRule]?
        public init(memory: Memory, cpu: CPU, pids: Pids, devices: [DeviceRule]? = nil) {
            self.memory = memory
            self.cpu = cpu
            self.pids = pids
            self.devices = devices
        }
    }
    /// One devices cgroup rule; a nil major or minor is the wildcard.
    public struct DeviceRule: Codable, Sendable, Equatable {
        public var allow: Bool
        public var type: String?
        public var major: Int64?
        public var minor: Int64?
        public var access: String
        public init(allow: Bool, type: String? = nil, major: Int64? = nil, minor: Int64? = nil, access: String) {
            self.allow = allow
            self.type = type
            self.major = major
            self.minor = minor
            self.access = access
        }
    }
    public struct Memory: Codable, Sendable {
        public var limit: Int64
        public var swap: Int64?
        public var swappiness: UInt64?
        public init(limit: Int64, swap: Int64? = nil, swappiness: UInt64? = nil) {
            self.limit = limit
            self.swap = swap
            self.swappiness = swappiness
        }
    }
    public struct CPU: Codable, Sendable {
        public var quota: Int64
        public var period: UInt64
        public init(quota: Int64, period: UInt64) {
            self.quota = quota
            self.period = period
        }
    }
    public struct Pids: Codable, Sendable {
        public var limit: Int64
        public init(limit: Int64) {
            self.limit = limit
        }
    }
    public struct Seccomp: Codable, Sendable {
        public var defaultAction: String
        public var architectures: [String]
        public var syscalls: [SyscallRule]
        public init(defaultAction: String, architectures: [String], syscalls: [SyscallRule]) {
            self.defaultAction = defaultAction
            self.architectures = architectures
            self.syscalls = syscalls
        }
    }
    public struct SyscallRule: Codable, Sendable {
        public var names: [String]
        public var action: String
        public var errnoRet: UInt32?
        public var args: [SyscallArg]?
        public init(names: [String], action: String, errnoRet: UInt32? = nil, args: [SyscallArg]? = nil) {
            self.names = names
            self.action = action
            self.errnoRet = errnoRet
            self.args = args
        }
    }
    public struct SyscallArg: Codable, Sendable {
        public var index: UInt32
        public var value: UInt64
        public var valueTwo: UInt64
        public var op: String
        public init(index: UInt32, value: UInt64, valueTwo: UInt64, op: String) {
            self.index = index
            self.value = value
            self.valueTwo = valueTwo
            self.op = op
        }
    }
    public init(
        ociVersion: String = "1.0.2", process: Process, root: Root, hostname: String, mounts: [Mount], linux: Linux
    ) {
        self.ociVersion = ociVersion
        self.process = process
        self.root = root
        self.hostname = hostname
        self.mounts = mounts
        self.linux = linux
    }
}
