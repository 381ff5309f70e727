import Foundation
import Glibc
import VivariumCore

/// A member of a directory being archived: its path below the root, what `fstat` said, and for a
/// regular file its open descriptor (the walk closes it).
struct WalkedEntry {
    var path: String
    var st: stat
    var symlink: String?
    var hardlinkTo: String?
    var fd: Int32?
}

/// Walks a host directory without following a symlink or leaving through `..`: every directory is
/// opened below its parent with O_NOFOLLOW and identified by the descriptor, so a directory in `skip`
/// (by device and inode) is never entered however it is reached, a bind mount included. Sockets are
/// left out (an archive cannot hold them); names are sorted, so the same tree gives the same layer.
struct DirectoryWalk {
    let root: String
    let skip: [(dev_t, ino_t)]

    func walk(_ body: (WalkedEntry) throws -> Void) throws {
        let fd = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            throw VivariumError(.invalidArgument, "cannot open \(root): \(String(cString: strerror(errno)))")
        }
        var links: [String: String] = [:]
        try walk(fd, prefix: "", links: &links, body)
    }

    private func skipped(_ st: stat) -> Bool { skip.contains { $0.0 == st.st_dev && $0.1 == st.st_ino } }

    /// Walks the directory `dirFD` (and closes it).
    private func walk(
        _ dirFD: Int32, prefix: String, links: inout [String: String], _ body: (WalkedEntry) throws -> Void
    ) throws {
        guard let dir = fdopendir(dirFD) else {
            close(dirFD)
            throw VivariumError(.invalidArgument, "cannot list \(root)/\(prefix): errno \(errno)")
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        for name in names.sorted() {
            let path = prefix + name
            var st = stat()
            guard fstatat(dirFD, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }  // gone meanwhile
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                let sub = openat(dirFD, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard sub >= 0 else { continue }
                var real = stat()
                guard fstat(sub, &real) == 0, !skipped(real) else {
                    close(sub)
                    continue
                }
                do {
                    try body(WalkedEntry(path: path + "/", st: real))
                } catch {
                    close(sub)
                    throw error
                }
                try walk(sub, prefix: path + "/", links: &links, body)
            case S_IFREG:
                let key = "\(st.st_dev):\(st.st_ino)"
                if st.st_nlink > 1, let first = links[key] {
                    try body(WalkedEntry(path: path, st: st, hardlinkTo: first))
                    continue
                }
                let f = openat(dirFD, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY)
                guard f >= 0 else { continue }
                defer { close(f) }
                var real = stat()
                guard fstat(f, &real) == 0, real.st_mode & S_IFMT == S_IFREG else { continue }
                if real.st_nlink > 1 { links[key] = path }
                try body(WalkedEntry(path: path, st: real, fd: f))
            case S_IFLNK:
                var buf = [CChar](repeating: 0, count: 4097)
                let n = readlinkat(dirFD, name, &buf, 4096)
                guard n > 0 else { continue }
                let target = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                try body(WalkedEntry(path: path, st: st, symlink: target))
            case S_IFSOCK:
                continue
            default:
                try body(WalkedEntry(path: path, st: st))  // fifos, and device nodes the unpacker refuses
            }
        }
    }
}

/// Writes a POSIX tar stream (ustar headers, pax records for long names and large numbers) to `sink`.
struct TarWriter {
    let sink: (UnsafeRawBufferPointer) throws -> Void

    init(_ sink: @escaping (UnsafeRawBufferPointer) throws -> Void) { self.sink = sink }

    mutating func add(_ e: WalkedEntry) throws {
        let type: UInt8
        var size: Int64 = 0
        switch e.st.st_mode & S_IFMT {
        case S_IFDIR: type = UInt8(ascii: "5")
        case S_IFLNK: type = UInt8(ascii: "2")
        case S_IFIFO: type = UInt8(ascii: "6")
        case S_IFCHR: type = UInt8(ascii: "3")
        case S_IFBLK: type = UInt8(ascii: "4")
        default:
            if e.hardlinkTo != nil {
                type = UInt8(ascii: "1")
            } else {
                type = UInt8(ascii: "0")
                size = Int64(e.st.st_size)
            }
        }
        let link = e.symlink ?? e.hardlinkTo ?? ""
        var pax: [(String, String)] = []
        if e.path.utf8.count > 99 { pax.append(("path", e.path)) }
        if link.utf8.count > 99 { pax.append(("linkpath", link)) }
        if size > 0o77777777777 { pax.append(("size", String(size))) }
        if e.st.st_uid > 0o7777777 { pax.append(("uid", String(e.st.st_uid))) }
        if e.st.st_gid > 0o7777777 { pax.append(("gid", String(e.st.st_gid))) }
        if !pax.isEmpty {
            var records: [UInt8] = []
            for (k, v) in pax {
                let body = " \(k)=\(v)\n"
                var len = body.utf8.count + 1
                while String(len).utf8.count + body.utf8.count != len { len += 1 }
                records += Array((String(len) + body).utf8)
            }
            try emit(Self.header(name: "PaxHeader", type: UInt8(ascii: "x"), size: Int64(records.count), e: nil))
            try emit(records)
            try emit([UInt8](repeating: 0, count: Self.padding(Int64(records.count))))
        }
        // Names too long for the header are in the pax record above.
        try emit(
            Self.header(
                name: e.path.utf8.count > 99 ? "long-name" : e.path, type: type, size: size, e: e,
                link: link.utf8.count > 99 ? "long-link" : link))
        guard let fd = e.fd, size > 0 else { return }
        var left = size
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while left > 0 {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, Int(min(Int64($0.count), left))) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw VivariumError(.invalidArgument, "\(e.path) changed while it was read (or cannot be read)")
            }
            try buffer.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            left -= Int64(n)
        }
        try emit([UInt8](repeating: 0, count: Self.padding(size)))
    }

    func finish() throws { try emit([UInt8](repeating: 0, count: 1024)) }

    private func emit(_ bytes: [UInt8]) throws {
        guard !bytes.isEmpty else { return }
        try bytes.withUnsafeBytes { try sink($0) }
    }

    static func padding(_ size: Int64) -> Int { Int((512 - size % 512) % 512) }

    static func header(name: String, type: UInt8, size: Int64, e: WalkedEntry?, link: String = "") -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 512)
        func put(_ s: String, _ at: Int, _ len: Int) {
            for (i, c) in s.utf8.prefix(len).enumerated() { b[at + i] = c }
        }
        func octal(_ v: Int64, _ at: Int, _ len: Int) {
            let digits = String(min(v, (1 << (3 * (len - 1))) - 1), radix: 8)
            put(String(repeating: "0", count: max(0, len - 1 - digits.count)) + digits, at, len - 1)
        }
        put(name, 0, 100)
        octal(Int64(e.map { $0.st.st_mode & 0o7777 } ?? 0o644), 100, 8)
        octal(Int64(e?.st.st_uid ?? 0), 108, 8)
        octal(Int64(e?.st.st_gid ?? 0), 116, 8)
        octal(size, 124, 12)
        octal(Int64(e?.st.st_mtim.tv_sec ?? 0), 136, 12)
        b[156] = type
        put(link, 157, 100)
        put("ustar", 257, 6)
        put("00", 263, 2)
        for i in 148..<156 { b[i] = 32 }
        let sum = b.reduce(0) { $0 + Int($1) }
        octal(Int64(sum), 148, 7)
        b[154] = 0
        b[155] = 32
        return b
    }
}
