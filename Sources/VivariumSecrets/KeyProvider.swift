import Crypto
import Foundation
import Synchronization
import VivariumCore
import VivariumOS

/// Where key-encryption keys live. Data keys are wrapped and unwrapped here; the engine never sees a
/// key-encryption key, and with an external provider it never leaves that provider.
public protocol KeyProvider: Sendable {
    /// `local` or `transit`, for the audit trail and `kms ls`.
    var kind: String { get }
    /// The key new data keys are wrapped by.
    func currentKeyID() async throws -> String
    /// Every key that can still unwrap, oldest first.
    func keyIDs() async throws -> [String]
    func wrap(_ dataKey: [UInt8]) async throws -> WrappedKey
    func unwrap(_ key: WrappedKey) async throws -> [UInt8]
    /// The same data key wrapped by the current key.
    func rewrap(_ key: WrappedKey) async throws -> WrappedKey
    /// Adds a key and makes it current; returns its id.
    func rotate() async throws -> String
    /// Removes a key that nothing is wrapped by any more (the engine checks that first).
    func retire(_ keyID: String) async throws
}

/// The default provider: a keyring file (mode 0600, root only) of AES-256 keys with ids. It is created
/// only on a first start, while no data key is wrapped anywhere: a keyring lost later is a start-up
/// error, never a silent new one that would leave every secret unreadable.
public final class LocalKeyring: KeyProvider {
    struct Entry: Codable {
        var id: String
        var created: Date
        var key: Data
    }
    struct File: Codable {
        var format = 1
        var current: String
        var keys: [Entry]
    }

    public let path: String
    let state: Mutex<File>
    public var kind: String { "local" }

    /// Opens the keyring at `path`; creates it when it is missing and `mayCreate` (no wrapped data key
    /// exists). Returns the keyring and whether it was created.
    public static func open(path: String, mayCreate: Bool) throws -> (LocalKeyring, created: Bool) {
        var st = stat()
        guard lstat(path, &st) == 0 else {
            guard errno == ENOENT else {
                throw VivariumError(
                    .unavailable, "cannot read the keyring \(path): \(String(cString: strerror(errno)))")
            }
            guard mayCreate else {
                throw VivariumError(
                    .unavailable,
                    "the keyring \(path) is missing but secrets are wrapped by it: restore it from a backup "
                        + "(a new keyring could not decrypt them)")
            }
            let first = Entry(id: "kek-1", created: Date(), key: Self.newKey())
            let file = File(current: first.id, keys: [first])
            try FileSystem.makeDirectory((path as NSString).deletingLastPathComponent, mode: 0o700)
            try write(file, path)
            return (LocalKeyring(path: path, file: file), true)
        }
        guard st.st_mode & S_IFMT == S_IFREG, st.st_uid == 0 else {
            throw VivariumError(.unavailable, "the keyring \(path) is not a regular file owned by root")
        }
        guard st.st_mode & 0o077 == 0 else {
            throw VivariumError(
                .unavailable,
                "the keyring \(path) is readable by others (mode \(String(st.st_mode & 0o777, radix: 8))): chmod 600 it"
            )
        }
        guard let data = FileManager.default.contents(atPath: path),
            let file = try? decoder().decode(File.self, from: data),
            !file.keys.isEmpty, file.keys.contains(where: { $0.id == file.current }),
            file.keys.allSatisfy({ $0.key.count == 32 })
        else { throw VivariumError(.unavailable, "the keyring \(path) is damaged") }
        return (LocalKeyring(path: path, file: file), false)
    }

    init(path: String, file: File) {
        self.path = path
        state = Mutex(file)
    }

    static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }

    static func newKey() -> Data { SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) } }

    static func write(_ file: File, _ path: String) throws {
        let enc = JSONEncoder()
        enc.dateEncodingStrategy = .iso8601
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try FileSystem.writeSecret(try enc.encode(file), to: path)
    }

    public func currentKeyID() async throws -> String { state.withLock { $0.current } }
    public func keyIDs() async throws -> [String] { state.withLock { $0.keys.map(\.id) } }

    func key(_ id: String) throws -> SymmetricKey {
        guard let e = state.withLock({ $0.keys.first { $0.id == id } }) else {
            throw VivariumError(.secretUnreadable, "key-encryption key \(id) is not in the keyring \(path)")
        }
        return SymmetricKey(data: e.key)
    }

    public func wrap(_ dataKey: [UInt8]) async throws -> WrappedKey {
        let id = state.withLock { $0.current }
        let box = try AES.GCM.seal(dataKey, using: try key(id), authenticating: Data(id.utf8))
        return WrappedKey(keyID: id, bytes: Array(box.combined!))
    }

    public func unwrap(_ w: WrappedKey) async throws -> [UInt8] {
        do {
            let box = try AES.GCM.SealedBox(combined: w.bytes)
            return Array(try AES.GCM.open(box, using: try key(w.keyID), authenticating: Data(w.keyID.utf8)))
        } catch let e as VivariumError {
            throw e
        } catch {
            throw VivariumError(.secretUnreadable, "a data key wrapped by \(w.keyID) does not unwrap: it was changed")
        }
    }

    public func rewrap(_ w: WrappedKey) async throws -> WrappedKey {
        if w.keyID == state.withLock({ $0.current }) { return w }
        return try await wrap(try await unwrap(w))
    }

    public func rotate() async throws -> String {
        try state.withLock { file in
            let n = (file.keys.compactMap { Int($0.id.dropFirst(4)) }.max() ?? 0) + 1
            var next = file
            next.keys.append(Entry(id: "kek-\(n)", created: Date(), key: Self.newKey()))
            next.current = "kek-\(n)"
            try Self.write(next, path)  // on disk before any data key is wrapped by it
            file = next
            return next.current
        }
    }

    public func retire(_ keyID: String) async throws {
        try state.withLock { file in
            guard file.keys.contains(where: { $0.id == keyID }) else {
                throw VivariumError(.notFound, "no key \(keyID) in the keyring")
            }
            guard keyID != file.current else {
                throw VivariumError(.invalidState, "\(keyID) is the current key: rotate first")
            }
            var next = file
            next.keys.removeAll { $0.id == keyID }
            try Self.write(next, path)
            file = next
        }
    }
}
