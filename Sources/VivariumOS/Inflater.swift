import CVivariumOS
import Foundation
import VivariumCore

/// A streaming gzip (or zlib, or with `raw` a bare deflate) decompressor: bytes in, bytes out, never
/// the whole stream in memory.
public final class Inflater {
    private let z: OpaquePointer
    public private(set) var finished = false

    public init(raw: Bool = false) throws {
        guard let z = vv_inflate_new(raw ? 1 : 0) else {
            throw VivariumError(.internalError, "cannot start a decompressor")
        }
        self.z = z
    }

    deinit { vv_inflate_free(z) }

    /// Decompresses `input`, handing the output to `sink` in chunks of at most 256 KiB. Input after the
    /// end of the stream is ignored.
    public func feed(_ input: UnsafeRawBufferPointer, _ sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        var offset = 0
        var out = [UInt8](repeating: 0, count: 256 << 10)
        while !finished {
            var consumed = 0
            var produced = 0
            let rc = out.withUnsafeMutableBytes { o in
                vv_inflate_step(
                    z, input.baseAddress.map { $0.assumingMemoryBound(to: UInt8.self) + offset },
                    input.count - offset, o.baseAddress!.assumingMemoryBound(to: UInt8.self), o.count, &consumed,
                    &produced)
            }
            guard rc >= 0 else { throw VivariumError(.invalidArgument, "the archive's gzip stream is corrupt") }
            offset += consumed
            if produced > 0 { try out.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<produced])) } }
            if rc == 1 { finished = true }
            if offset >= input.count && produced < out.count { return }
        }
    }
}

extension FileSystem {
    /// Opens `path` below the directory `dirfd` as if it were the root: no "..", absolute path or
    /// symlink resolves outside it (openat2 RESOLVE_IN_ROOT). Returns the fd or -errno.
    public static func openInRoot(_ dirfd: Int32, _ path: String, _ flags: Int32, mode: mode_t = 0) -> Int32 {
        vv_open_in_root(dirfd, path, flags, UInt32(mode))
    }
}

/// A stream decompressor of an archive: bytes in, bytes out.
public protocol Decompressor: AnyObject {
    func feed(_ input: UnsafeRawBufferPointer, _ sink: (UnsafeRawBufferPointer) throws -> Void) throws
    /// Whether the input so far ends cleanly (a whole gzip stream, a whole zstd frame).
    var finished: Bool { get }
}

extension Inflater: Decompressor {}

/// A streaming zstd decompressor (libzstd): frames one after another, each window at most 128 MiB.
public final class ZstdDecoder: Decompressor {
    private let z: OpaquePointer
    public private(set) var finished = false

    public init() throws {
        guard let z = vv_zstd_new() else { throw VivariumError(.internalError, "cannot start a zstd decoder") }
        self.z = z
    }

    deinit { vv_zstd_free(z) }

    /// The zstd frame magic number, little-endian.
    public static let magic: [UInt8] = [0x28, 0xb5, 0x2f, 0xfd]

    public func feed(_ input: UnsafeRawBufferPointer, _ sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        var offset = 0
        var out = [UInt8](repeating: 0, count: 256 << 10)
        while true {
            var consumed = 0
            var produced = 0
            let rc = out.withUnsafeMutableBytes { o in
                vv_zstd_step(
                    z, input.baseAddress.map { $0.assumingMemoryBound(to: UInt8.self) + offset },
                    input.count - offset, o.baseAddress!.assumingMemoryBound(to: UInt8.self), o.count, &consumed,
                    &produced)
            }
            guard rc >= 0 else { throw VivariumError(.invalidArgument, "the archive's zstd stream is corrupt") }
            offset += consumed
            if consumed > 0 || produced > 0 { finished = rc == 1 }
            if produced > 0 { try out.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<produced])) } }
            if offset >= input.count && produced < out.count { return }
        }
    }
}
