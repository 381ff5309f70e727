import CVivariumOS
import Foundation
import VivariumCore

/// The members of a zip archive (stored or deflated; not zip64, not encrypted), read from the file
/// mapped into memory. Every member's size is bounded while it inflates, whatever its header claims,
/// and its CRC-32 checked.
public struct ZipReader {
    let data: Data
    let label: String

    public struct Member {
        public var name: String
        let method: UInt16
        let crc: UInt32
        let compressedSize: Int
        let localOffset: Int
    }
    public let members: [Member]

    public init(path: String, maxMembers: Int) throws {
        do { data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw VivariumError(.invalidArgument, "cannot read \(path)")
        }
        label = path
        // The end-of-central-directory record, within the last 64 KiB (its comment) and 22 bytes.
        guard data.count >= 22 else { throw VivariumError(.invalidArgument, "\(path) is not a zip archive") }
        var end = -1
        for i in stride(from: data.count - 22, through: max(0, data.count - 22 - 65535), by: -1)
        where Self.u32(data, i) == 0x0605_4b50 {
            end = i
            break
        }
        guard end >= 0 else { throw VivariumError(.invalidArgument, "\(path) is not a zip archive") }
        let count = Int(Self.u16(data, end + 10))
        let offset = Int(Self.u32(data, end + 16))
        guard count != 0xffff, offset != 0xffff_ffff else {
            throw VivariumError(.invalidArgument, "\(path) is a zip64 archive, which is not read")
        }
        guard count <= maxMembers else {
            throw VivariumError(.invalidArgument, "\(path) has \(count) members, more than \(maxMembers)")
        }
        var members: [Member] = []
        var at = offset
        for _ in 0..<count {
            guard at + 46 <= data.count, Self.u32(data, at) == 0x0201_4b50 else {
                throw VivariumError(.invalidArgument, "\(path) has a corrupt central directory")
            }
            let nameLength = Int(Self.u16(data, at + 28))
            let skip = nameLength + Int(Self.u16(data, at + 30)) + Int(Self.u16(data, at + 32))
            guard at + 46 + skip <= data.count else {
                throw VivariumError(.invalidArgument, "\(path) has a corrupt central directory")
            }
            if Self.u16(data, at + 8) & 1 != 0 {
                throw VivariumError(.invalidArgument, "\(path) has encrypted members, which are not read")
            }
            members.append(
                Member(
                    name: String(
                        decoding: data[(data.startIndex + at + 46)..<(data.startIndex + at + 46 + nameLength)],
                        as: UTF8.self),
                    method: Self.u16(data, at + 10), crc: Self.u32(data, at + 16),
                    compressedSize: Int(Self.u32(data, at + 20)), localOffset: Int(Self.u32(data, at + 42))))
            at += 46 + skip
        }
        self.members = members
    }

    /// A member's bytes, at most `limit` of them.
    public func read(_ m: Member, limit: Int) throws -> Data {
        let at = m.localOffset
        guard at + 30 <= data.count, Self.u32(data, at) == 0x0403_4b50 else {
            throw VivariumError(.invalidArgument, "\(label): \(m.name) has no local header")
        }
        let start = at + 30 + Int(Self.u16(data, at + 26)) + Int(Self.u16(data, at + 28))
        guard start + m.compressedSize <= data.count else {
            throw VivariumError(.invalidArgument, "\(label): \(m.name) runs past the end of the archive")
        }
        let raw = data[(data.startIndex + start)..<(data.startIndex + start + m.compressedSize)]
        var out = Data()
        switch m.method {
        case 0:
            guard raw.count <= limit else { throw tooLarge(m, limit) }
            out = Data(raw)
        case 8:
            let inflater = try Inflater(raw: true)
            try raw.withUnsafeBytes { input in
                try inflater.feed(input) { chunk in
                    guard out.count + chunk.count <= limit else { throw tooLarge(m, limit) }
                    out.append(contentsOf: chunk)
                }
            }
            guard inflater.finished else {
                throw VivariumError(.invalidArgument, "\(label): \(m.name) is a truncated deflate stream")
            }
        default:
            throw VivariumError(.invalidArgument, "\(label): \(m.name) uses compression method \(m.method)")
        }
        let crc = out.withUnsafeBytes { vv_crc32($0.baseAddress?.assumingMemoryBound(to: UInt8.self), $0.count) }
        guard UInt32(truncatingIfNeeded: crc) == m.crc else {
            throw VivariumError(.invalidArgument, "\(label): \(m.name) fails its CRC-32 check")
        }
        return out
    }

    func tooLarge(_ m: Member, _ limit: Int) -> VivariumError {
        VivariumError(.invalidArgument, "\(label): \(m.name) is larger than \(limit) bytes")
    }

    static func u16(_ d: Data, _ i: Int) -> UInt16 {
        UInt16(d[d.startIndex + i]) | UInt16(d[d.startIndex + i + 1]) << 8
    }
    static func u32(_ d: Data, _ i: Int) -> UInt32 {
        UInt32(u16(d, i)) | UInt32(u16(d, i + 2)) << 16
    }
}
