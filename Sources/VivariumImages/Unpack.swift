import Foundation
import Glibc
import VivariumCore
import VivariumOCI
import VivariumOS

import struct Crypto.SHA256

/// The one rule set for every unpack (a host archive, an upload, a registry layer): what an archive may
/// hold and how large it may grow.
public struct UnpackRules: Sendable, Equatable {
    /// Uncompressed tar bytes.
    public var maxBytes: Int64
    /// Members (files, directories, links) of one archive.
    public var maxEntries: Int
    /// Uncompressed bytes per compressed byte, judged once past `ratioGrace`.
    public var maxRatio: Int64
    /// Keep setuid and setgid bits (they are stripped by default; no_new_privs makes them inert in a box
    /// anyway, and an image is safer without them).
    public var keepSetID: Bool

    /// 8 GiB, 200,000 members (a large distribution image holds about 50,000), 100× expansion (real
    /// layers compress 2–10×; a crafted gzip expands 1000×).
    public static let `default` = UnpackRules(maxBytes: 8 << 30, maxEntries: 200_000, maxRatio: 100, keepSetID: false)
    /// Small archives may compress far better than 100×: ratios count only past 64 MiB.
    public static let ratioGrace: Int64 = 64 << 20
    /// Ids of 65,536 and above do not exist in a sandbox's id range: they become nobody.
    public static let maxID: UInt32 = 65535
    public static let nobody: UInt32 = 65534

    public init(maxBytes: Int64, maxEntries: Int, maxRatio: Int64, keepSetID: Bool) {
        self.maxBytes = maxBytes
        self.maxEntries = maxEntries
        self.maxRatio = maxRatio
        self.keepSetID = keepSetID
    }
}

/// Streams a tar archive, gzip- or zstd-compressed or plain (detected), into a directory under `UnpackRules`:
/// no device node, no member outside the root (every path resolves in the root, symlinks included), no
/// setuid or setgid bit unless allowed, ids clamped into a sandbox's range, bounded bytes, members and
/// expansion. Nothing is staged: bytes go from the input to their files as they arrive.
public final class Unpacker {
    public struct Summary: Sendable {
        /// The digest of the uncompressed tar stream (the OCI diff id).
        public var diffID: Digest
        public var entries: Int
        public var tarBytes: Int64
        /// The layer media type the archive's compression makes it.
        public var mediaType: String
    }

    let rules: UnpackRules
    /// An OCI layer applied over what the root holds: `.wh.NAME` removes NAME, `.wh..wh..opq` empties its
    /// directory of what earlier layers put there.
    let whiteouts: Bool
    let rootFD: Int32
    private var inflater: (any Decompressor)?
    private var sniff: [UInt8] = []
    private var detected = false
    private var compressedBytes: Int64 = 0
    private var tarBytes: Int64 = 0
    private var entries = 0
    private var diff = SHA256()

    private enum Meta { case pax, globalPax, longName, longLink }
    private enum State {
        case header
        case meta(Meta, remaining: Int, pad: Int)
        case data(remaining: Int64, pad: Int)
        case pad(Int)
        case end
    }
    private var state = State.header
    private var block: [UInt8] = []
    private var metaBuffer: [UInt8] = []
    private var pax: [String: String] = [:]
    private var longName: String?
    private var longLink: String?
    private var file: (fd: Int32, path: String)?
    private var zeroBlocks = 0

    /// `root` must exist; the caller owns it and removes it when the unpack fails.
    public init(root: String, rules: UnpackRules, whiteouts: Bool = false) throws {
        rootFD = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC)
        guard rootFD >= 0 else { throw VivariumError(.internalError, "cannot open \(root): errno \(errno)") }
        self.rules = rules
        self.whiteouts = whiteouts
    }

    deinit {
        if let file { close(file.fd) }
        close(rootFD)
    }

    static func refuse(_ why: String) -> VivariumError { VivariumError(.invalidArgument, "the archive \(why)") }

    /// Feeds the next bytes of the archive as they were received.
    public func feed(_ input: UnsafeRawBufferPointer) throws {
        guard !input.isEmpty else { return }
        compressedBytes += Int64(input.count)
        if !detected {
            sniff += input
            guard sniff.count >= 4 else { return }
            detected = true
            if sniff[0] == 0x1f && sniff[1] == 0x8b {
                inflater = try Inflater()
            } else if Array(sniff.prefix(4)) == ZstdDecoder.magic {
                inflater = try ZstdDecoder()
            }
            let head = sniff
            sniff = []
            compressedBytes -= Int64(head.count)
            try head.withUnsafeBytes { try feed($0) }
            return
        }
        if let inflater {
            try inflater.feed(input) { try tar($0) }
        } else {
            try tar(input)
        }
    }

    /// Ends the archive: it must have ended cleanly, its last file complete.
    public func finish() throws -> Summary {
        if !detected && !sniff.isEmpty {
            detected = true
            let head = sniff
            sniff = []
            compressedBytes -= Int64(head.count)
            try head.withUnsafeBytes { try feed($0) }
        }
        if let inflater, !inflater.finished { throw Self.refuse("ends inside its compressed stream") }
        guard entries > 0 else { throw Self.refuse("is empty or not a tar archive") }
        switch state {
        case .end: break
        case .header where block.isEmpty: break
        default: throw Self.refuse("ends in the middle of a member")
        }
        return Summary(
            diffID: Digest(sha256: diff.finalize()), entries: entries, tarBytes: tarBytes,
            mediaType: inflater is ZstdDecoder
                ? MediaType.ociLayerZstd : inflater == nil ? MediaType.ociLayer : MediaType.ociLayerGzip)
    }

    // MARK: The tar stream

    private func tar(_ bytes: UnsafeRawBufferPointer) throws {
        tarBytes += Int64(bytes.count)
        diff.update(bufferPointer: bytes)
        if tarBytes > rules.maxBytes {
            throw Self.refuse("expands past \(Quantity.formatBytes(rules.maxBytes)) (the unpack limit)")
        }
        if inflater != nil, tarBytes > UnpackRules.ratioGrace, tarBytes > rules.maxRatio * max(1, compressedBytes) {
            throw Self.refuse(
                "expands more than \(rules.maxRatio)× its compressed size: refused as a decompression bomb")
        }
        var i = 0
        while i < bytes.count {
            let left = bytes.count - i
            switch state {
            case .end:
                return  // what follows the end-of-archive blocks is padding
            case .header:
                let n = min(512 - block.count, left)
                block += UnsafeRawBufferPointer(rebasing: bytes[i..<(i + n)])
                i += n
                if block.count == 512 {
                    let b = block
                    block = []
                    try header(b)
                }
            case .meta(let kind, let remaining, let pad):
                let n = min(remaining, left)
                metaBuffer += UnsafeRawBufferPointer(rebasing: bytes[i..<(i + n)])
                i += n
                if n == remaining {
                    try endMeta(kind)
                    state = pad > 0 ? .pad(pad) : .header
                } else {
                    state = .meta(kind, remaining: remaining - n, pad: pad)
                }
            case .data(let remaining, let pad):
                let n = Int(min(remaining, Int64(left)))
                if let file {
                    try Self.writeAll(file.fd, UnsafeRawBufferPointer(rebasing: bytes[i..<(i + n)]), file.path)
                }
                i += n
                if Int64(n) == remaining {
                    if let file { close(file.fd) }
                    file = nil
                    state = pad > 0 ? .pad(pad) : .header
                } else {
                    state = .data(remaining: remaining - Int64(n), pad: pad)
                }
            case .pad(let remaining):
                let n = min(remaining, left)
                i += n
                state = n == remaining ? .header : .pad(remaining - n)
            }
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, _ path: String) throws {
        var off = 0
        while off < bytes.count {
            let n = write(fd, bytes.baseAddress! + off, bytes.count - off)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw VivariumError(
                    .unavailable, "cannot write \(path) while unpacking: \(String(cString: strerror(errno)))")
            }
            off += n
        }
    }

    private static func padding(_ size: Int64) -> Int { Int((512 - size % 512) % 512) }

    private func header(_ b: [UInt8]) throws {
        if b.allSatisfy({ $0 == 0 }) {
            zeroBlocks += 1
            if zeroBlocks == 2 { state = .end }
            return
        }
        zeroBlocks = 0
        let stored = Self.number(b[148..<156])
        var sum = 0
        for (k, byte) in b.enumerated() { sum += (148..<156).contains(k) ? 32 : Int(byte) }
        guard stored == Int64(sum) else { throw Self.refuse("has a corrupt member header (bad checksum)") }
        let type = b[156]
        var size = Self.number(b[124..<136])
        if let s = pax["size"] { size = Int64(s) ?? -1 }
        guard size >= 0 else { throw Self.refuse("has a member with an invalid size") }
        switch type {
        case UInt8(ascii: "x"), UInt8(ascii: "g"), UInt8(ascii: "L"), UInt8(ascii: "K"):
            guard size <= 1 << 20 else { throw Self.refuse("has a metadata record over 1 MiB") }
            let kind: Meta =
                switch type {
                case UInt8(ascii: "x"): .pax
                case UInt8(ascii: "g"): .globalPax
                case UInt8(ascii: "L"): .longName
                default: .longLink
                }
            metaBuffer = []
            state = size > 0 ? .meta(kind, remaining: Int(size), pad: Self.padding(size)) : .header
            if size == 0 { try endMeta(kind) }
            return
        default: break
        }
        entries += 1
        guard entries <= rules.maxEntries else {
            throw Self.refuse("holds more than \(rules.maxEntries) members (the unpack limit)")
        }
        let ustar = b[257..<262].elementsEqual("ustar".utf8)
        var name = longName ?? pax["path"] ?? Self.string(b[0..<100])
        if longName == nil && pax["path"] == nil && ustar {
            let prefix = Self.string(b[345..<500])
            if !prefix.isEmpty { name = prefix + "/" + name }
        }
        let link = longLink ?? pax["linkpath"] ?? Self.string(b[157..<257])
        let mode = mode_t(Self.number(b[100..<108]) & 0o7777)
        let uid = pax["uid"].flatMap { UInt32($0) } ?? UInt32(clamping: Self.number(b[108..<116]))
        let gid = pax["gid"].flatMap { UInt32($0) } ?? UInt32(clamping: Self.number(b[116..<124]))
        pax = [:]
        longName = nil
        longLink = nil
        let member = Member(
            path: try Self.components(name), type: type, mode: mode, uid: uid, gid: gid, link: link,
            mtime: Self.number(b[136..<148]))
        let fd = try create(member)
        let regular = fd != nil
        if size > 0 && !regular && type != UInt8(ascii: "1") {
            throw Self.refuse("has data for \(name), which is not a regular file")
        }
        if let fd { file = (fd, name) }
        if size > 0 {
            state = .data(remaining: size, pad: Self.padding(size))
        } else {
            if let fd { close(fd) }
            file = nil
            state = .header
        }
    }

    private func endMeta(_ kind: Meta) throws {
        let bytes = metaBuffer
        metaBuffer = []
        switch kind {
        case .globalPax: return
        case .longName: longName = Self.string(bytes[...])
        case .longLink: longLink = Self.string(bytes[...])
        case .pax:
            // Records: "<length> <key>=<value>\n", the length counting the whole record.
            var i = 0
            while i < bytes.count {
                guard let sp = bytes[i...].firstIndex(of: 32),
                    let len = Int(String(decoding: bytes[i..<sp], as: UTF8.self)), len > sp - i, i + len <= bytes.count
                else { throw Self.refuse("has a malformed pax record") }
                var kv = bytes[(sp + 1)..<(i + len)]
                if kv.last == 10 { kv = kv.dropLast() }
                if let eq = kv.firstIndex(of: 61) {
                    pax[String(decoding: kv[..<eq], as: UTF8.self)] = String(decoding: kv[(eq + 1)...], as: UTF8.self)
                }
                i += len
            }
        }
    }

    static func string(_ field: ArraySlice<UInt8>) -> String {
        String(decoding: field.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// An octal field, or a base-256 one (high bit set) for values that do not fit.
    static func number(_ field: ArraySlice<UInt8>) -> Int64 {
        guard let first = field.first else { return 0 }
        if first & 0x80 != 0 {
            var v: Int64 = Int64(first & 0x7f)
            for byte in field.dropFirst() {
                guard v < Int64.max >> 8 else { return Int64.max }
                v = v << 8 | Int64(byte)
            }
            return v
        }
        var v: Int64 = 0
        for byte in field {
            if byte == 0 || byte == 32 { if v > 0 { break } else { continue } }
            guard (48...55).contains(byte), v < Int64.max >> 3 else { return -1 }
            v = v * 8 + Int64(byte - 48)
        }
        return v
    }

    /// A member's path as components below the root; "." and empty components dropped, ".." refused.
    static func components(_ raw: String) throws -> [String] {
        guard raw.utf8.count <= 4096 else { throw refuse("has a member path over 4096 bytes") }
        let parts = raw.split(separator: "/").filter { $0 != "." }.map(String.init)
        guard !parts.contains("..") else { throw refuse("has a member outside its root: \(raw)") }
        guard parts.allSatisfy({ $0.utf8.count <= 255 && !$0.contains("\0") }) else {
            throw refuse("has an invalid member name: \(raw)")
        }
        return parts
    }

    // MARK: Members

    struct Member {
        var path: [String]
        var type: UInt8
        var mode: mode_t
        var uid: UInt32
        var gid: UInt32
        var link: String
        var mtime: Int64

        var name: String { path.joined(separator: "/") }
    }

    /// Creates the member below the root; returns the open file of a regular file, whose data follows.
    private func create(_ m: Member) throws -> Int32? {
        let uid = m.uid > UnpackRules.maxID ? UnpackRules.nobody : m.uid
        let gid = m.gid > UnpackRules.maxID ? UnpackRules.nobody : m.gid
        var mode = m.mode
        if !rules.keepSetID { mode &= ~mode_t(0o6000) }
        guard let base = m.path.last else { return nil }  // the root itself keeps its own attributes
        let parent = try directory(Array(m.path.dropLast()))
        defer { close(parent) }
        func fail(_ what: String) -> VivariumError {
            VivariumError(
                .invalidArgument, "the archive's \(m.name): cannot \(what): \(String(cString: strerror(errno)))")
        }
        func attributes() throws {
            guard fchownat(parent, base, uid, gid, AT_SYMLINK_NOFOLLOW) == 0 else { throw fail("set its owner") }
            guard fchmodat(parent, base, mode, 0) == 0 else { throw fail("set its mode") }
        }
        if whiteouts, base.hasPrefix(".wh.") {
            if base == ".wh..wh..opq" {
                try Self.removeChildren(parent, m.name)
            } else {
                let name = String(base.dropFirst(4))
                guard !name.isEmpty, name != ".", name != "..", !name.hasPrefix(".wh.") else {
                    throw Self.refuse("has an invalid whiteout \(m.name)")
                }
                try Self.removeEntry(parent, name, m.name)
            }
            return nil
        }
        switch m.type {
        case UInt8(ascii: "5"):
            if mkdirat(parent, base, 0o700) != 0 {
                guard errno == EEXIST else { throw fail("create the directory") }
                var st = stat()
                guard fstatat(parent, base, &st, AT_SYMLINK_NOFOLLOW) == 0, st.st_mode & S_IFMT == S_IFDIR else {
                    try replace(parent, base, m)
                    guard mkdirat(parent, base, 0o700) == 0 else { throw fail("create the directory") }
                    try attributes()
                    return nil
                }
            }
            try attributes()
            return nil
        case 0, UInt8(ascii: "0"), UInt8(ascii: "7"):
            try replace(parent, base, m)
            let fd = openat(parent, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw fail("create the file") }
            guard fchown(fd, uid, gid) == 0, fchmod(fd, mode) == 0 else {
                close(fd)
                throw fail("set its owner and mode")
            }
            var times = [
                timespec(tv_sec: Int(m.mtime), tv_nsec: 0), timespec(tv_sec: Int(m.mtime), tv_nsec: 0),
            ]
            _ = futimens(fd, &times)
            return fd
        case UInt8(ascii: "2"):
            guard !m.link.isEmpty, m.link.utf8.count <= 4096 else {
                throw Self.refuse("has an empty symlink \(m.name)")
            }
            try replace(parent, base, m)
            guard symlinkat(m.link, parent, base) == 0 else { throw fail("create the symlink") }
            guard fchownat(parent, base, uid, gid, AT_SYMLINK_NOFOLLOW) == 0 else { throw fail("set its owner") }
            return nil
        case UInt8(ascii: "1"):
            let target = try Self.components(m.link)
            guard let targetBase = target.last else { throw Self.refuse("has a hard link to its root: \(m.name)") }
            let targetParent = try directory(Array(target.dropLast()), create: false)
            defer { close(targetParent) }
            try replace(parent, base, m)
            guard linkat(targetParent, targetBase, parent, base, 0) == 0 else { throw fail("link to \(m.link)") }
            return nil
        case UInt8(ascii: "6"):
            try replace(parent, base, m)
            guard mkfifoat(parent, base, 0o600) == 0 else { throw fail("create the fifo") }
            try attributes()
            return nil
        case UInt8(ascii: "3"), UInt8(ascii: "4"):
            throw Self.refuse("holds a device node, \(m.name): device nodes are refused")
        default:
            throw Self.refuse("holds \(m.name) of unsupported member type '\(Character(UnicodeScalar(m.type)))'")
        }
    }

    /// Removes `name` below `parent` (an O_PATH directory of the root), a directory with all it holds;
    /// never follows a symlink (one is removed as itself).
    static func removeEntry(_ parent: Int32, _ name: String, _ member: String) throws {
        if unlinkat(parent, name, 0) == 0 || errno == ENOENT { return }
        guard errno == EISDIR else {
            throw VivariumError(
                .invalidArgument, "the archive's whiteout \(member) cannot remove \(name): errno \(errno)")
        }
        let fd = openat(parent, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            throw VivariumError(.invalidArgument, "the archive's whiteout \(member) cannot open \(name)")
        }
        defer { close(fd) }
        try removeChildren(fd, member)
        guard unlinkat(parent, name, AT_REMOVEDIR) == 0 else {
            throw VivariumError(
                .invalidArgument, "the archive's whiteout \(member) cannot remove \(name): errno \(errno)")
        }
    }

    /// Removes everything in the directory `dir` (an O_PATH descriptor).
    static func removeChildren(_ dir: Int32, _ member: String) throws {
        let readable = openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard readable >= 0, let stream = fdopendir(readable) else {
            if readable >= 0 { close(readable) }
            throw VivariumError(.invalidArgument, "the archive's \(member) cannot read its directory")
        }
        var names: [String] = []
        while let e = readdir(stream) {
            let n = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if n != "." && n != ".." { names.append(n) }
        }
        closedir(stream)
        for n in names { try removeEntry(dir, n, member) }
    }

    /// Removes what a later member replaces (tar semantics: the last one wins); a directory only if empty.
    private func replace(_ parent: Int32, _ base: String, _ m: Member) throws {
        if unlinkat(parent, base, 0) == 0 || errno == ENOENT { return }
        if errno == EISDIR, unlinkat(parent, base, AT_REMOVEDIR) == 0 { return }
        throw VivariumError(
            .invalidArgument,
            "the archive's \(m.name) replaces something that cannot be removed: "
                + String(cString: strerror(errno)))
    }

    /// Opens (creating with mode 0755 where missing) a directory below the root, resolved in the root.
    private func directory(_ path: [String], create: Bool = true) throws -> Int32 {
        let joined = path.isEmpty ? "." : path.joined(separator: "/")
        let fd = FileSystem.openInRoot(rootFD, joined, O_PATH | O_DIRECTORY)
        if fd >= 0 { return fd }
        guard fd == -ENOENT, create, let last = path.last else {
            throw VivariumError(
                .invalidArgument,
                "the archive's \(joined) is not a directory below its root: "
                    + String(cString: strerror(Int32(-fd))))
        }
        let parent = try directory(Array(path.dropLast()))
        defer { close(parent) }
        if mkdirat(parent, last, 0o755) != 0 && errno != EEXIST {
            throw VivariumError(.invalidArgument, "cannot create \(joined): \(String(cString: strerror(errno)))")
        }
        let again = FileSystem.openInRoot(rootFD, joined, O_PATH | O_DIRECTORY)
        guard again >= 0 else {
            throw VivariumError(
                .invalidArgument,
                "the archive's \(joined) is not a directory: \(String(cString: strerror(Int32(-again))))")
        }
        return again
    }
}
