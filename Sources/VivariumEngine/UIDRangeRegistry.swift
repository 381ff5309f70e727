import Foundation
import Glibc
import VivariumCore
import VivariumOS

/// A host-wide record of which instance (state directory) owns which block of host uids, so that two
/// instances can never hand out overlapping id ranges. Kept as JSON under an flock; entries of state
/// directories that no longer exist are dropped.
public struct UIDRangeRegistry {
    public struct Entry: Codable, Equatable {
        public var stateDir: String
        public var base: Int64
        public var count: Int64
    }

    public let path: String
    public init(path: String = "/var/lib/vivarium-uid-ranges.json") { self.path = path }

    /// Claims [base, base + count) for `stateDir`, or throws if another instance holds an overlapping block.
    public func claim(stateDir: String, base: Int64, count: Int64) throws {
        let fd = open(path + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw VivariumError(.unavailable, "cannot open \(path).lock") }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else { throw VivariumError(.unavailable, "cannot lock \(path).lock") }
        var entries: [Entry] = []
        if let data = FileManager.default.contents(atPath: path), !data.isEmpty {
            guard let decoded = try? JSONDecoder().decode([Entry].self, from: data) else {
                throw VivariumError(.unavailable, "\(path) is corrupt: fix or remove it")
            }
            entries = decoded
        }
        entries.removeAll { $0.stateDir == stateDir || !FileSystem.exists($0.stateDir) }
        if let other = entries.first(where: { $0.base < base + count && base < $0.base + $0.count }) {
            throw VivariumError(
                .invalidArgument,
                "host uids \(base)..<\(base + count) overlap those of the instance at \(other.stateDir) "
                    + "(\(other.base)..<\(other.base + other.count)): set a different uid_base")
        }
        entries.append(Entry(stateDir: stateDir, base: base, count: count))
        let data = try JSONEncoder().encode(entries.sorted { $0.base < $1.base })
        try FileSystem.writeAtomically(data, to: path, mode: 0o600)
    }
}
