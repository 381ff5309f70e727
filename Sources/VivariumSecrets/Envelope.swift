import Crypto
import Foundation
import VivariumCore

/// What a sealed value belongs to, bound into its ciphertext as associated data: a row copied under
/// another tenant, name or version does not decrypt.
public struct SealContext: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable { case secret, env }
    public let kind: Kind
    public let tenant: String
    public let name: String
    public let version: Int64

    public init(_ kind: Kind, tenant: String, name: String, version: Int64) {
        self.kind = kind
        self.tenant = tenant
        self.name = name
        self.version = version
    }

    var associatedData: Data { Data("vivarium/\(kind.rawValue)/v1\0\(tenant)\0\(name)\0\(version)".utf8) }
    public var description: String { "\(kind.rawValue) \(tenant)/\(name) v\(version)" }
}

/// Envelope encryption: every value gets a fresh 256-bit data key, the value is sealed with it and the
/// key wrapped by the key provider. The plain data key exists only in memory, for the call.
public struct Envelope: Sendable {
    public let keys: any KeyProvider

    public init(keys: any KeyProvider) { self.keys = keys }

    public func seal(_ value: SecretValue, _ context: SealContext) async throws -> SealedValue {
        let dataKey = SymmetricKey(size: .bits256)
        let box = try AES.GCM.seal(value.bytes, using: dataKey, authenticating: context.associatedData)
        guard let combined = box.combined else { throw VivariumError(.internalError, "AES-GCM gave no ciphertext") }
        let wrapped = try await keys.wrap(dataKey.withUnsafeBytes { Array($0) })
        return SealedValue(key: wrapped, ciphertext: Array(combined))
    }

    /// The value back; `secret_unreadable` when the row was moved, changed or its key is gone.
    public func open(_ sealed: SealedValue, _ context: SealContext) async throws -> SecretValue {
        let dataKey = try await keys.unwrap(sealed.key)
        do {
            let box = try AES.GCM.SealedBox(combined: sealed.ciphertext)
            let plain = try AES.GCM.open(
                box, using: SymmetricKey(data: dataKey), authenticating: context.associatedData)
            return SecretValue(Array(plain))
        } catch {
            throw VivariumError(
                .secretUnreadable,
                "\(context) does not decrypt: its ciphertext was changed or belongs to another secret")
        }
    }
}
