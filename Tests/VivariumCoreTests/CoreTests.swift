import Foundation
import Testing
import VivariumCore
import VivariumTestSupport

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
        expectCode(.invalidArgument) { try Quantity.parseBytes(input) }
    }

    @Test func parsesDurations() throws {
        #expect(try Quantity.parseSeconds("90") == 90)
        #expect(try Quantity.parseSeconds("30m") == 1800)
        #expect(try Quantity.parseSeconds("1h30m") == 5400)
        #expect(try Quantity.parseSeconds("2d") == 172_800)
        expectCode(.invalidArgument) { try Quantity.parseSeconds("10x") }
        expectCode(.invalidArgument) { try Quantity.parseSeconds("5m3") }
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
        expectCode(.invalidName) { try ResourceName.parse("Bad") }
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
        expectCode(.invalidState) { try SandboxState.stopped.requireRunning() }
        expectCode(.invalidState) { try SandboxState.creating.requireStopped() }
        #expect(try SandboxState(name: "running", pid: 7) == .running(pid: 7))
        expectCode(.internalError) { try SandboxState(name: "running", pid: nil) }
        expectCode(.internalError) { try SandboxState(name: "exploded", pid: nil) }
    }

    @Test func limitsAreBounded() throws {
        expectCode(.invalidArgument) {
            try ResourceLimits(memoryBytes: 1, milliCPUs: 1000, pids: 10).validated()
        }
        expectCode(.invalidArgument) {
            try ResourceLimits(memoryBytes: 64 << 20, milliCPUs: 0, pids: 10).validated()
        }
        expectCode(.invalidArgument) {
            try ResourceLimits(memoryBytes: 64 << 20, milliCPUs: 100, pids: 1).validated()
        }
        #expect(try ResourceLimits.default.validated() == .default)
    }

    @Test func envAndLabelsAreValidated() throws {
        try FieldRules.validateEnv(["PATH": "/bin", "_X1": ""])
        expectCode(.invalidArgument) { try FieldRules.validateEnv(["1A": "x"]) }
        expectCode(.invalidArgument) { try FieldRules.validateEnv(["A=B": "x"]) }
        expectCode(.invalidArgument) { try FieldRules.validateEnv(["A": String(repeating: "x", count: 5000)]) }
        expectCode(.invalidArgument) { try FieldRules.validateLabels(["bad key": "x"]) }
        for control in ["\u{1B}[2J", "bell\u{07}", "a\rb", "nul\u{0}", "c1\u{9B}", "del\u{7F}"] {
            expectCode(.invalidArgument, "\(control.debugDescription)") {
                try FieldRules.validateLabels(["k": control])
            }
        }
        try FieldRules.validateLabels(["k": "plain text, ünïcode and emoji 🐢"])
        #expect(try FieldRules.parsePairs(["A=1", "B=x=y"], what: "env") == ["A": "1", "B": "x=y"])
        expectCode(.invalidArgument) { try FieldRules.parsePairs(["=x"], what: "env") }
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

@Suite struct ImageReferenceTests {
    func ref(_ s: String) throws -> ImageReference { try ImageReference.parse(s) }

    @Test func parsesDockerStyleReferences() throws {
        let digest = "sha256:" + String(repeating: "ab", count: 32)
        let full = try ref("localhost:5000/team/tools:v1.2@\(digest)")
        #expect(full.registry == "localhost:5000" && full.repository == "team/tools" && full.tag == "v1.2")
        #expect(full.digest?.rawValue == digest)
        #expect(full.description == "localhost:5000/team/tools:v1.2@\(digest)")
        let hub = try ref("python:3.12")
        #expect(hub.registry == nil && hub.repository == "python" && hub.tag == "3.12")
        #expect(hub.resolved().description == "docker.io/library/python:3.12")
        #expect(try ref("org/app").resolved().description == "docker.io/org/app:latest")
        #expect(
            try ref("ghcr.io/org/app").resolved(defaultRegistry: "mirror.example").description
                == "ghcr.io/org/app:latest")
        #expect(try ref("app@\(digest)").resolved(defaultRegistry: "r.example").tag == nil, "a digest needs no tag")
        // The first component is a path, not a registry, unless it looks like a host.
        #expect(try ref("team/tools").registry == nil)
    }

    @Test func aLocalImageIsOneBareComponent() throws {
        #expect(try ref("base").localName == ResourceName(rawValue: "base"))
        for s in ["python:3.12", "org/app", "ghcr.io/app", "base@sha256:" + String(repeating: "0", count: 64)] {
            #expect(try ref(s).localName == nil, "\(s)")
        }
        // Stored specs keep the plain name they always had.
        let spec = SandboxSpec(image: ImageReference(ResourceName(rawValue: "base")!))
        let json = try JSONEncoder().encode(spec)
        #expect(String(decoding: json, as: UTF8.self).contains(#""image":"base""#))
        #expect(try JSONDecoder().decode(SandboxSpec.self, from: json) == spec)
    }

    @Test func refusesWhatTheGrammarDoesNot() {
        for bad in [
            "", "UPPER", "a//b", "/abs", "app:", "app:-tag", "app@sha256:short",
            "app@md5:" + String(repeating: "0", count: 32),
            "-lead", "trail-", "a..b", "a___b", "bad host:1/app", "host:99999/app", "a b",
            String(repeating: "a", count: 256),
        ] {
            expectCode(.invalidArgument, "\(bad.prefix(40))") { try ref(bad) }
        }
    }
}
