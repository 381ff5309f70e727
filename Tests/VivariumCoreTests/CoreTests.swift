import Foundation
import Testing
import VivariumCore

@Suite struct QuantityTests {
    @Test(arguments: [
        ("512M", Int64(512 << 20)), ("1G", 1 << 30), ("1GiB", 1 << 30), ("64k", 64 << 10), ("1048576", 1 << 20),
        ("2T", 2 << 40),
    ])
    func parsesSizes(input: String, bytes: Int64) throws {
        #expect(try Quantity.parseBytes(input) == bytes)
    }

    @Test(arguments: ["", "M", "12Q", "-5M", "1.5G", "99999999999999999G"])
    func rejectsBadSizes(input: String) {
        #expect(throws: VivariumError.self) { try Quantity.parseBytes(input) }
    }

    @Test func parsesDurations() throws {
        #expect(try Quantity.parseSeconds("90") == 90)
        #expect(try Quantity.parseSeconds("30m") == 1800)
        #expect(try Quantity.parseSeconds("1h30m") == 5400)
        #expect(try Quantity.parseSeconds("2d") == 172_800)
        #expect(throws: VivariumError.self) { try Quantity.parseSeconds("10x") }
        #expect(throws: VivariumError.self) { try Quantity.parseSeconds("5m3") }
    }

    @Test func formatsBytes() {
        #expect(Quantity.formatBytes(512 << 20) == "512M")
        #expect(Quantity.formatBytes(1 << 30) == "1G")
        #expect(Quantity.formatBytes(1536 << 10) == "1536K")
        #expect(Quantity.formatBytes((1536 << 10) + 1) == "1.5M")
    }
}

@Suite struct IdentifierTests {
    @Test func namesAreDNSLabels() {
        for ok in ["a", "demo", "my-box-1", String(repeating: "a", count: 63), "0abc"] {
            #expect(ResourceName(rawValue: ok) != nil, "\(ok)")
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", String(repeating: "a", count: 64), "é", "a b", "a/b"] {
            #expect(ResourceName(rawValue: bad) == nil, "\(bad)")
        }
        #expect(throws: VivariumError.self) { try ResourceName.parse("Bad") }
    }

    @Test func idsAreRandomAndValidated() {
        let a = SandboxID.random()
        let b = SandboxID.random()
        #expect(a != b)
        #expect(SandboxID(rawValue: a.rawValue) == a)
        #expect(SandboxID(rawValue: "xyz") == nil)
        #expect(SandboxID(rawValue: String(repeating: "G", count: 24)) == nil)
    }

    @Test func digestsAreSHA256() {
        let d = Digest.of(Array("hello".utf8))
        #expect(d.rawValue == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        #expect(Digest(rawValue: d.rawValue) == d)
        #expect(Digest(rawValue: "sha256:abc") == nil)
        #expect(Digest(rawValue: "md5:" + String(repeating: "a", count: 64)) == nil)
    }
}

@Suite struct SandboxModelTests {
    @Test func stateAccessorsThrowOutsideTheirState() throws {
        #expect(try SandboxState.running(pid: 42).requireRunning() == 42)
        #expect(throws: VivariumError.self) { try SandboxState.stopped.requireRunning() }
        #expect(throws: VivariumError.self) { try SandboxState.creating.requireStopped() }
        #expect(try SandboxState(name: "running", pid: 7) == .running(pid: 7))
        #expect(throws: VivariumError.self) { try SandboxState(name: "running", pid: nil) }
        #expect(throws: VivariumError.self) { try SandboxState(name: "exploded", pid: nil) }
    }

    @Test func limitsAreBounded() throws {
        #expect(throws: VivariumError.self) {
            try ResourceLimits(memoryBytes: 1, milliCPUs: 1000, pids: 10).validated()
        }
        #expect(throws: VivariumError.self) {
            try ResourceLimits(memoryBytes: 64 << 20, milliCPUs: 0, pids: 10).validated()
        }
        #expect(throws: VivariumError.self) {
            try ResourceLimits(memoryBytes: 64 << 20, milliCPUs: 100, pids: 1).validated()
        }
        #expect(try ResourceLimits.default.validated() == .default)
    }

    @Test func envAndLabelsAreValidated() throws {
        try FieldRules.validateEnv(["PATH": "/bin", "_X1": ""])
        #expect(throws: VivariumError.self) { try FieldRules.validateEnv(["1A": "x"]) }
        #expect(throws: VivariumError.self) { try FieldRules.validateEnv(["A=B": "x"]) }
        #expect(throws: VivariumError.self) { try FieldRules.validateEnv(["A": String(repeating: "x", count: 5000)]) }
        #expect(throws: VivariumError.self) { try FieldRules.validateLabels(["bad key": "x"]) }
        #expect(try FieldRules.parsePairs(["A=1", "B=x=y"], what: "env") == ["A": "1", "B": "x=y"])
        #expect(throws: VivariumError.self) { try FieldRules.parsePairs(["=x"], what: "env") }
    }

    @Test func wireTypesUseSnakeCase() throws {
        let data = try WireCoding.encoder().encode(CreateSandboxRequest(name: "a", memoryBytes: 5, readOnly: true))
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("\"memory_bytes\":5"))
        #expect(text.contains("\"read_only\":true"))
        let back = try WireCoding.decoder().decode(CreateSandboxRequest.self, from: data)
        #expect(back.memoryBytes == 5 && back.readOnly == true)
    }
}
