import CVivariumOS
import Foundation
import Glibc
import VivariumCore

/// nftables in process (libnftables, from the nftables package): a batch is one transaction, with no `nft`
/// process to start. The context is bound to one network namespace when it is made.
public final class Nftables: @unchecked Sendable {
    let handle: OpaquePointer

    /// A context for the namespace at `namespacePath`, or the daemon's own when nil.
    public init(namespacePath: String?) throws {
        var ns: Int32 = -1
        if let namespacePath {
            ns = open(namespacePath, O_RDONLY | O_CLOEXEC)
            guard ns >= 0 else { throw posixError("open the network namespace \(namespacePath)") }
        }
        defer { if ns >= 0 { close(ns) } }
        var error: Int32 = 0
        guard let h = vv_nft_open(ns, &error) else {
            if error == ENOENT {
                throw VivariumError(
                    .unavailable,
                    "libnftables.so.1 is not installed, so sandbox networks cannot be isolated: "
                        + "apt-get install nftables, or set network = off")
            }
            throw posixError("open an nftables context", error)
        }
        handle = h
    }

    deinit { vv_nft_close(handle) }

    /// Runs `batch` (nft syntax) as one transaction: all of it, or nothing and an error. Returns what it
    /// printed (the answer to a `list`, up to 16 KiB).
    @discardableResult
    public func run(_ batch: String) throws -> String {
        var buffer = [CChar](repeating: 0, count: 16384)
        let rc = vv_nft_run(handle, batch, &buffer, buffer.count)
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard rc == 0 else { throw VivariumError(.runtimeFailure, "nftables: \(text.prefix(1000))") }
        return text
    }
}
