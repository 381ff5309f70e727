import Foundation

/// The subset of the OCI runtime specification (config.json) that Vivarium writes.
public struct RuntimeSpec: Codable, Sendable {
    public var ociVersion = "1.0.2"
    public var process: Process
    public var root: Root
    public var hostname: String
    public var mounts: [Mount]
    public var linux: Linux

    public struct Process: Codable, Sendable {
        public var terminal = false
        public var user: User
        public var args: [String]
        public var env: [String]
        public var cwd: String
        public var capabilities: Capabilities
        public var rlimits: [Rlimit]
        public var noNewPrivileges = true
        public var oomScoreAdj: Int?
    }
    public struct User: Codable, Sendable {
        public var uid: UInt32
        public var gid: UInt32
    }
    public struct Capabilities: Codable, Sendable {
        public var bounding: [String]
        public var effective: [String]
        public var permitted: [String]
        public var inheritable: [String] = []
        public var ambient: [String] = []
    }
    public struct Rlimit: Codable, Sendable {
        public var type: String
        public var hard: UInt64
        public var soft: UInt64
    }
    public struct Root: Codable, Sendable {
        public var path: String
        public var readonly: Bool
    }
    public struct Mount: Codable, Sendable {
        public var destination: String
        public var type: String
        public var source: String
        public var options: [String]
    }
    public struct IDMapping: Codable, Sendable {
        public var containerID: UInt32
        public var hostID: UInt32
        public var size: UInt32
    }
    public struct Namespace: Codable, Sendable {
        public var type: String
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
    }
    public struct Resources: Codable, Sendable {
        public var memory: Memory
        public var cpu: CPU
        public var pids: Pids
    }
    public struct Memory: Codable, Sendable {
        public var limit: Int64
        public var swap: Int64?
        public var swappiness: UInt64?
    }
    public struct CPU: Codable, Sendable {
        public var quota: Int64
        public var period: UInt64
    }
    public struct Pids: Codable, Sendable {
        public var limit: Int64
    }
    public struct Seccomp: Codable, Sendable {
        public var defaultAction: String
        public var architectures: [String]
        public var syscalls: [SyscallRule]
    }
    public struct SyscallRule: Codable, Sendable {
        public var names: [String]
        public var action: String
        public var errnoRet: UInt32?
        public var args: [SyscallArg]?
    }
    public struct SyscallArg: Codable, Sendable {
        public var index: UInt32
        public var value: UInt64
        public var valueTwo: UInt64
        public var op: String
    }
}
