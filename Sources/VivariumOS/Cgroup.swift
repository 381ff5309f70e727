import CVivariumOS
import Foundation
import Glibc
import VivariumCore

/// The host's cgroup layout, detected at start.
public enum CgroupMode: String, Sendable, Codable {
    /// cgroup v2 mounted at /sys/fs/cgroup.
    case unified
    /// v1 controllers only.
    case legacy
    /// v1 controllers plus a cgroup2 mount at /sys/fs/cgroup/unified: crun must not see the latter.
    case hybrid

    public static func detect(root: String = "/sys/fs/cgroup") -> CgroupMode {
        let cgroup2Magic = 0x6367_7270
        if vv_fs_type(root) == cgroup2Magic { return .unified }
        if vv_fs_type(root + "/unified") == cgroup2Magic { return .hybrid }
        return .legacy
    }
}

/// The cgroup hierarchies of this host, listed once at start: the v2 root, or one directory per v1
/// controller (the hybrid host's cgroup2 mount excluded), and whether swap is accounted.
public struct CgroupHost: Sendable {
    public let mode: CgroupMode
    public let hierarchies: [String]
    public let swapAccounting: Bool

    public init(mode: CgroupMode, root: String = "/sys/fs/cgroup") {
        self.mode = mode
        let children = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        switch mode {
        case .unified:
            hierarchies = [root]
            // memory.swap.max exists in non-root cgroups when the kernel accounts swap.
            swapAccounting = children.contains { FileSystem.exists("\(root)/\($0)/memory.swap.max") }
        case .legacy, .hybrid:
            hierarchies = children.filter { $0 != "unified" }.sorted().map { root + "/" + $0 }
            swapAccounting = FileSystem.exists(root + "/memory/memory.memsw.limit_in_bytes")
        }
    }

    /// The directories of the cgroup at `path` (e.g. `/vivarium-x/sandbox-id`) in every hierarchy.
    public func directories(_ path: String) -> [String] { hierarchies.map { $0 + path } }
}

/// One cgroup, in every hierarchy that holds it (v1: one directory per controller; v2: one).
public struct Cgroup: Sendable {
    public let name: String
    public let dirs: [String]

    public init(name: String, dirs: [String]) {
        self.name = name
        self.dirs = dirs
    }

    /// Makes the directories. A new v1 cpuset is empty and takes no process until it has the parent's
    /// CPUs and memory nodes, so they are copied.
    public func create() throws {
        guard !dirs.isEmpty else { throw VivariumError(.runtimeFailure, "no cgroup hierarchy to create \(name) in") }
        for d in dirs {
            guard mkdir(d, 0o755) == 0 || errno == EEXIST else {
                throw VivariumError(.runtimeFailure, "cannot create the cgroup \(name)")
            }
            if d.contains("/cpuset/") {
                let parent = (d as NSString).deletingLastPathComponent
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let v = (FileSystem.readAll(parent + "/" + f) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
                    _ = try? v.write(toFile: d + "/" + f, atomically: false, encoding: .utf8)
                }
            }
        }
    }

    public var exists: Bool { !dirs.isEmpty && dirs.allSatisfy(FileSystem.exists) }

    /// The processes in the cgroup (read from the pids hierarchy on v1).
    public var processes: [Int32] {
        (FileSystem.readAll(procsFile) ?? "").split(separator: "\n").compactMap { Int32($0) }
    }

    public var isEmpty: Bool {
        (FileSystem.readAll(procsFile) ?? "x").trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
    }

    var procsFile: String { (dirs.first { $0.contains("/pids/") } ?? dirs.first ?? "/nonexistent") + "/cgroup.procs" }

    /// Removes the directories; a cgroup that still holds processes stays.
    public func removeIfEmpty() { for d in dirs { rmdir(d) } }

    /// SIGKILLs every process in the cgroup: cgroup.kill on v2; on v1 freeze, kill every member, thaw,
    /// and repeat until it is empty (a frozen process cannot fork away).
    public func killAll() async {
        if let v2 = dirs.first, FileSystem.exists(v2 + "/cgroup.kill") {
            _ = try? "1".write(toFile: v2 + "/cgroup.kill", atomically: false, encoding: .utf8)
            return
        }
        let freezer = dirs.first { $0.contains("/freezer/") }
        for _ in 0..<50 {
            if let f = freezer {
                _ = try? "FROZEN".write(toFile: f + "/freezer.state", atomically: false, encoding: .utf8)
            }
            let pids = processes
            for pid in pids { kill(pid, SIGKILL) }
            if let f = freezer {
                _ = try? "THAWED".write(toFile: f + "/freezer.state", atomically: false, encoding: .utf8)
            }
            if pids.isEmpty { return }
            // A cancelled caller (a stream dropped) still needs them gone.
            if (try? await Task.sleep(for: .milliseconds(20))) == nil { usleep(20_000) }
        }
    }
}
