import Foundation
import VivariumCore
import VivariumOS

/// The host side of `/run/secrets`: one directory per sandbox on the daemon's tmpfs, bind-mounted
/// read-only into that sandbox alone. Files are replaced by rename, so a reader in the box sees the old
/// value or the new one, never a mix; they belong to the box's root and the secret's group, mode 0440.
public struct SecretFiles: Sendable {
    /// The directory holding every sandbox's (on a tmpfs).
    public let root: String

    public init(root: String) { self.root = root }

    public func directory(_ id: SandboxID) -> String { root + "/" + id.rawValue }

    /// Where new files are written before they are renamed into a box's directory: on the same tmpfs,
    /// mounted into no box, so a box never sees a half-written or temporary file.
    var staging: String { root + "/.staging" }

    /// The sandbox's directory, owned by its root (host id `uidBase`).
    public func prepare(_ id: SandboxID, uidBase: Int64) throws {
        try FileSystem.makeDirectory(staging, mode: 0o700)
        try FileSystem.makeDirectory(directory(id), mode: 0o755, owner: (uid_t(uidBase), gid_t(uidBase)))
    }

    /// Whether the sandbox has a directory (it booted, or is booting).
    public func isPrepared(_ id: SandboxID) -> Bool { FileSystem.exists(directory(id)) }

    public func write(_ id: SandboxID, _ name: SecretName, _ value: SecretValue, uidBase: Int64, gid: UInt32)
        throws
    {
        let staged = staging + "/" + id.rawValue + "-" + randomHex(bytes: 8)
        try FileSystem.writeAtomically(
            Data(value.bytes), to: staged, mode: 0o440, durable: false,
            owner: (uid_t(uidBase), gid_t(uidBase + Int64(gid))))
        guard rename(staged, directory(id) + "/" + name.rawValue) == 0 else {
            let e = errno
            unlink(staged)
            throw VivariumError(.internalError, "cannot deliver \(name): \(String(cString: strerror(e)))")
        }
    }

    /// Removes a secret's file; true when there was one.
    @discardableResult
    public func remove(_ id: SandboxID, _ name: SecretName) -> Bool {
        unlink(directory(id) + "/" + name.rawValue) == 0
    }

    /// The secrets delivered to a sandbox now.
    public func names(_ id: SandboxID) -> [SecretName] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory(id))) ?? []).compactMap {
            SecretName(rawValue: $0)
        }.sorted()
    }

    public func removeAll(_ id: SandboxID) {
        try? FileManager.default.removeItem(atPath: directory(id))
    }

    /// The sandboxes not in `live` whose directories are left (a crash mid-delete).
    public func orphans(live: Set<String>) -> [SandboxID] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter { !live.contains($0) }
            .compactMap(SandboxID.init(rawValue:))
    }
}
