import Crypto
import Foundation
import Testing
import VivariumAudit
import VivariumCore

@Suite struct AuditChainTests {
    /// A chain of `n` records as the store seals them.
    func chain(_ n: Int) -> [AuditRecord] {
        var out: [AuditRecord] = []
        var previous = AuditChain.genesis
        for i in 1...n {
            let e = AuditEvent(
                "sandbox.create", target: "box\(i)", tenant: "acme", details: ["id": "\(i)"],
                context: AuditContext(actor: AuditActor(id: "pr_1", name: "ann", tenant: "acme"), source: "10.0.0.1"))
            let r = e.seal(seq: Int64(i), timeMs: 1_700_000_000_000 + Int64(i), previousHash: previous)
            previous = AuditChain.bytes(hex: r.hash)!
            out.append(r)
        }
        return out
    }

    func verify(_ records: [AuditRecord], _ checkpoints: [AuditCheckpoint] = [], key: AuditKey) -> Int64? {
        var v = AuditVerifier(publicKey: key.publicKey, checkpoints: checkpoints)
        records.forEach { v.add($0) }
        return v.finish().problem?.seq
    }

    @Test func anUntouchedChainVerifiesAndEveryTamperingIsNamed() throws {
        let key = AuditKey()
        let log = chain(10)
        let cp = try key.sign(seq: 10, hash: log[9].hash, timeMs: 1)
        #expect(verify(log, [cp], key: key) == nil)

        var edited = log
        edited[4].outcome = "failed"
        #expect(verify(edited, [cp], key: key) == 5)

        var deleted = log
        deleted.remove(at: 6)
        #expect(verify(deleted, [cp], key: key) == 7)

        var swapped = log
        swapped.swapAt(2, 3)
        (swapped[2].seq, swapped[3].seq) = (3, 4)
        #expect(verify(swapped, [cp], key: key) == 3)
        let atSwap = try key.sign(seq: 4, hash: log[3].hash, timeMs: 1)
        #expect(verify(swapped, [atSwap, cp], key: key) == 3, "a checkpoint inside the break does not blur it")

        // Cut off the newest three: only a checkpoint beyond the cut can tell.
        #expect(verify(Array(log.prefix(7)), key: key) == nil)
        #expect(verify(Array(log.prefix(7)), [cp], key: key) == 8)

        // Rewrite a record and every hash after it: the chain holds, the signed checkpoint does not.
        var rewritten = Array(log.prefix(5))
        var previous = AuditChain.bytes(hex: log[4].hash)!
        for var r in log.dropFirst(5) {
            r.details["id"] = "forged"
            r.hash = AuditChain.hex(AuditChain.link(previous: previous, r))
            previous = AuditChain.bytes(hex: r.hash)!
            rewritten.append(r)
        }
        let early = try key.sign(seq: 3, hash: log[2].hash, timeMs: 1)
        #expect(verify(rewritten, [early], key: key) == nil, "no checkpoint covers the rewrite")
        #expect(verify(rewritten, [early, cp], key: key) == 4, "named from the last good checkpoint on")

        var forged = cp
        forged.signature = try AuditKey().sign(seq: 10, hash: log[9].hash, timeMs: 1).signature
        #expect(verify(log, [forged], key: key) == 10)

        // Noise cannot move the finger away from a real edit: a bogus checkpoint, a junk record, a
        // duplicate of a checkpointed record, an absurd sequence number.
        var bogus = try AuditKey().sign(seq: 1, hash: log[0].hash, timeMs: 1)
        bogus.keyId = key.keyID
        #expect(verify(edited, [bogus, cp], key: key) == 5)
        var junk = log[0]
        junk.seq = -7
        #expect(verify([junk] + Array(log.prefix(4)) + [edited[4]] + Array(log.dropFirst(5)), [cp], key: key) == 1)
        #expect(verify(rewritten + [log[9]], [early, cp], key: key) == 4, "a duplicate does not stand in")
        var huge = log[9]
        huge.seq = Int64.max
        #expect(verify(log + [huge], [cp], key: key) == 11)
    }

    @Test func theEncodingIsLengthPrefixedSoFieldsCannotBleedIntoEachOther() {
        var a = chain(1)[0]
        var b = a
        a.target = "ab"
        a.outcome = "c"
        b.target = "a"
        b.outcome = "bc"
        #expect(AuditChain.canonical(a) != AuditChain.canonical(b))
        var c = a
        c.details = ["k": "v=w"]
        var d = a
        d.details = ["k=v": "w"]
        #expect(AuditChain.canonical(c) != AuditChain.canonical(d))
        var absent = a
        absent.source = nil
        var empty = a
        empty.source = ""
        #expect(AuditChain.canonical(absent) != AuditChain.canonical(empty))
        // Details are hashed in key order, whatever order a decoder hands them over in.
        var e = a
        e.details = ["b": "2", "a": "1", "c": "3"]
        var f = a
        f.details = ["c": "3", "a": "1", "b": "2"]
        #expect(AuditChain.canonical(e) == AuditChain.canonical(f))
    }

    @Test(arguments: [
        ("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlc2lnbmF0dXJl", "eyJ"),
        ("viv_0123456789ab_" + String(repeating: "ab", count: 32), "abab"),
        ("vivr_" + String(repeating: "cd", count: 32), "cdcd"),
        ("AKIAIOSFODNN7EXAMPLE", "AKIA"),
        ("ghp_" + String(repeating: "x1", count: 18), "x1x1"),
        ("password=hunter2", "hunter2"),
        ("--db-password: 'p4ss word'", "p4ss"),
        ("--db-password: 'p4ss word2'", "word2"),
        ("PGPASSWORD='two words'", "words"),
        ("https://bob:s3cret@example.com/x", "s3cret"),
        ("Authorization: Bearer abcdefgh12345678", "abcdefgh1234"),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----", "MIIEvQ"),
        ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalr"),
        ("K7MDENGbPxRfiCYEXAMPLEKEYwJalrXUtnFEMI9a8b7c6", "K7MDENG"),
        ("DB=Zx9aB3kLmN0pQrStUvWxYz0123456789AbCdEfGH", "Zx9aB3"),
        ("https://api.example.com/x?access_token=tok123xyz&x=1", "tok123xyz"),
        (#"{"user":"bob","password":"s3cr3tpw"}"#, "s3cr3tpw"),
        ("Cookie: lang=en; session=abc123session", "abc123session"),
        ("A=1;PASSWORD=chained99 ./run", "chained99"),
        ("Authorization: Token tok-4f7a9c", "tok-4f7a9c"),
        ("curl -ubob:curlpass1", "curlpass1"),
        ("curl --user=bob:curlpass2", "curlpass2"),
        ("sh -c 'curl -u bob:curlpass3 x'", "curlpass3"),
        ("echo hi\nPASSWORD: newline77", "newline77"),
        ("AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSy"),
        ("sk_live_51Habcdefghij1234", "51Habcdef"),
        ("k:" + String(repeating: "ab", count: 32), "abab"),
        ("redis://:emptyuserpw@host:6379", "emptyuserpw"),
        ("postgres://bob:p@ss@db/x", "p@ss"),
        ("mysql -uroot -pMyPass4 db", "MyPass4"),
        ("/usr/bin/mysqldump -pDumpPass5 db", "DumpPass5"),
        ("sshpass -p SshPass6 ssh host", "SshPass6"),
        ("sudo sshpass -pSshPass7 ssh host", "SshPass7"),
        ("htpasswd -b /etc/htpasswd alice HtPass8", "HtPass8"),
        ("htpasswd -nbB alice HtPass9", "HtPass9"),
        ("openssl enc -aes-256-cbc -k OsslPass10 -in f", "OsslPass10"),
        ("openssl pkcs12 -passin pass:OsslPass11 -in f", "OsslPass11"),
        ("sh -c 'mysql -pQuoted12 db'", "Quoted12"),
        ("ls; mysql -pChained13", "Chained13"),
        ("SSH_KEY=keyvalue14 ./deploy", "keyvalue14"),
        ("DB_PWD=pwdvalue15 ./deploy", "pwdvalue15"),
        ("export MY_TOKEN=tokvalue16", "tokvalue16"),
        (
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nMIIEvQIB\nshortline\n-----END PRIVATE KEY-----",
            "shortline"
        ),
    ])
    func credentialsAreRedacted(input: String, secretPart: String) {
        let out = Redactor.redact("run " + input + " now")
        #expect(!out.contains(secretPart), "\(out)")
        #expect(out.contains(Redactor.mark))
    }

    @Test func ordinaryTextAndDigestsAreKept() {
        for s in [
            "/usr/local/libexec/vivarium/vivarium-init --verbose", "sha256:" + String(repeating: "0f", count: 32),
            "make -j2 test", "sandbox-name-42", "mkdir -p /work/a", "ssh -p 2222 host", "htpasswd -c /etc/h alice",
            "openssl x509 -in cert.pem -noout",
        ] {
            #expect(Redactor.redact(s) == s)
        }
        #expect(
            Redactor.redact(Redactor.commandLine(["mysql", "--password", "hunter2", "-e", "select 1"]))
                == "mysql --password [redacted] -e 'select 1'")
        #expect(
            Redactor.redact(Redactor.commandLine(["curl", "-u", "bob:pw123", "https://x"]))
                == "curl -u bob:[redacted] https://x")
        let tool = Redactor.redact(Redactor.commandLine(["tool", "--password=", "pw456", "--client-key", "k789"]))
        #expect(!tool.contains("pw456") && !tool.contains("k789"))
        #expect(
            Redactor.redact(Redactor.commandLine(Array(repeating: String(repeating: "token= ", count: 600), count: 64)))
                .utf8.count < 4200)
        #expect(
            Redactor.redact(["api_token": "abc", "image": "base"]) == ["api_token": "[redacted]", "image": "base"])
        let long = Redactor.redact(String(repeating: "word ", count: 2000) + "hunter2hunter2")
        #expect(long.utf8.count < Redactor.maxLength + 16 && long.hasSuffix("word …[cut]"), "cut at a word boundary")
        let secretAtCut = String(repeating: "a", count: Redactor.maxLength - 8) + " hunter2hunter2"
        #expect(!Redactor.redact(secretAtCut).contains("hunt"), "a word the cut would split is dropped whole")
    }

    @Test func redactionIsLinearOnHostileInput() {
        let hostile = [
            String(repeating: "a=", count: 30_000), String(repeating: "eyJ", count: 20_000),
            String(repeating: "-----BEGIN PRIVATE KEY-----", count: 2000), String(repeating: "Aa1", count: 20_000),
            String(repeating: "password:", count: 7000), String(repeating: "sk-", count: 20_000),
            String(repeating: "passpass", count: 8000), String(repeating: "a", count: 64_000),
            String(repeating: "bearer ", count: 9000), String(repeating: "://a:", count: 12_000),
            String(repeating: "a\0", count: 128_000), String(repeating: "x:@", count: 20_000),
        ]
        let clock = ContinuousClock()
        for s in hostile {
            let t = clock.measure { _ = Redactor.redact(s) }
            #expect(t < .seconds(2), "\(s.prefix(20))… took \(t)")
        }
        let args = Array(repeating: String(repeating: "viv_0123456789ab_ ", count: 230), count: 256)
        #expect(clock.measure { _ = Redactor.redact(Redactor.commandLine(args)) } < .seconds(2))
    }

    @Test func checkpointExportFilesRoundTripAndTolerateATornLastLine() throws {
        let path = "/tmp/vivarium-cp-\(UInt32.random(in: 0...UInt32.max)).jsonl"
        defer { unlink(path) }
        let key = AuditKey()
        let sink = JSONLinesCheckpointFile(path: path)
        let a = try key.sign(seq: 1, hash: String(repeating: "ab", count: 32), timeMs: 5)
        let b = try key.sign(seq: 2, hash: String(repeating: "cd", count: 32), timeMs: 6)
        try sink.write(a)
        try sink.write(b)
        #expect(try JSONLinesCheckpointFile.read(path).checkpoints == [a, b])
        #expect(a.isValid(under: key.publicKey) && !a.isValid(under: AuditKey().publicKey))
        let h = FileHandle(forWritingAtPath: path)!
        h.seekToEndOfFile()
        h.write(Data(#"{"seq":3,"ha"#.utf8))
        try h.close()
        let c = try key.sign(seq: 3, hash: String(repeating: "ef", count: 32), timeMs: 7)
        try sink.write(c)
        let read = try JSONLinesCheckpointFile.read(path)
        #expect(read.checkpoints == [a, b, c], "a torn line does not swallow the next checkpoint")
        #expect(read.unreadable == [3])
    }
}
