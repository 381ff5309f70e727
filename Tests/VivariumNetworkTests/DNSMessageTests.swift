import Testing
import VivariumCore

@testable import VivariumNetwork

/// The forwarder reads what boxes send it: names, compressed answers and hostile messages.
@Suite struct DNSMessageTests {
    /// A query for `name` (type A), id 0x1234, RD set.
    static func query(_ name: String) -> [UInt8] {
        var m: [UInt8] = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        for label in name.split(separator: ".") { m += [UInt8(label.utf8.count)] + Array(label.utf8) }
        return m + [0, 0, 1, 0, 1]
    }

    @Test func questionsAnswersAndRefusals() throws {
        let q = Self.query("Files.PyPI.test")
        let (name, type) = try #require(DNSMessage.question(q))
        #expect(name == "files.pypi.test" && type == 1)
        // An answer: a CNAME pointing back at the question's name (compressed), then two A records.
        var a = q
        a[2] = 0x81
        a[3] = 0x80
        a[7] = 3
        a += [0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xC0, 12]
        a += [0xC0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 45, 67, 89, 2]
        a += [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 45, 67, 89, 3]
        let found = DNSMessage.addresses(a)
        #expect(found.map(\.address) == ["45.67.89.2", "45.67.89.3"] && found.map(\.ttl) == [300, 5])
        let refused = try #require(DNSMessage.refused(q))
        #expect(refused.count == q.count && refused[0] == 0x12 && refused[1] == 0x34)
        #expect(refused[2] & 0x80 != 0 && refused[3] & 0x0F == 5 && refused[7] == 0)
    }

    @Test func malformedMessagesAreRejectedNotTrusted() {
        // A pointer to itself, a label running past the end, a truncated header.
        var loop = Self.query("x.test")
        loop.replaceSubrange(12..<20, with: [0xC0, 12])
        #expect(DNSMessage.question(loop) == nil)
        #expect(DNSMessage.question([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63, 0x61]) == nil)
        #expect(DNSMessage.question([1, 2, 3]) == nil && DNSMessage.refused([1, 2, 3]) == nil)
        // An answer count larger than what follows yields what was complete.
        var a = Self.query("x.test")
        a[7] = 9
        a += [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 9, 0, 4, 1, 2, 3, 4, 0xC0]
        #expect(DNSMessage.addresses(a).map(\.address) == ["1.2.3.4"])
    }
}
