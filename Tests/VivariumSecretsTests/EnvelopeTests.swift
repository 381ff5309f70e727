import Foundation
import Testing
import VivariumCore
import VivariumSecrets
import VivariumTestSupport

/// Envelope encryption and the local keyring, attacked the ways a stolen or edited database would be.
@Suite struct EnvelopeTests {
    let dir = NSTemporaryDirectory() + "vivarium-secrets-\(UInt32.random(in: 0...UInt32.max))"
    var keyring: String { dir + "/kms/keyring.json" }

    func ring() throws -> LocalKeyring { try LocalKeyring.open(path: keyring, mayCreate: true).0 }

    @Test func sealedValuesOpenOnlyUnderTheirOwnNameAndUnchanged() async throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let envelope = Envelope(keys: try ring())
        let value = SecretValue(Array("s3cr3t-\(UUID())".utf8))
        let ctx = SealContext(.secret, tenant: "acme", name: "db", version: 1)
        let sealed = try await envelope.seal(value, ctx)
        #expect(try await envelope.open(sealed, ctx) == value)
        #expect(!Data(sealed.ciphertext).contains(Data(value.bytes)), "the ciphertext holds no plain text")
        // The same row under another name, tenant, version or kind.
        for other in [
            SealContext(.secret, tenant: "acme", name: "api", version: 1),
            SealContext(.secret, tenant: "other", name: "db", version: 1),
            SealContext(.secret, tenant: "acme", name: "db", version: 2),
            SealContext(.env, tenant: "acme", name: "db", version: 1),
        ] {
            await expectCode(.secretUnreadable, "\(other)") { try await envelope.open(sealed, other) }
        }
        // One flipped bit in the ciphertext, and in the wrapped data key.
        var corrupt = sealed
        corrupt.ciphertext[corrupt.ciphertext.count / 2] ^= 1
        await expectCode(.secretUnreadable) { try await envelope.open(corrupt, ctx) }
        var badKey = sealed
        badKey.key.bytes[badKey.key.bytes.count - 1] ^= 1
        await expectCode(.secretUnreadable) { try await envelope.open(badKey, ctx) }
        // Two seals of one value share nothing: each has its own data key.
        let again = try await envelope.seal(value, ctx)
        #expect(again.key.bytes != sealed.key.bytes && again.ciphertext != sealed.ciphertext)
    }

    @Test func valuesNeverPrint() {
        let value = SecretValue(Array("hunter2-distinctive".utf8))
        var dumped = ""
        dump(value, to: &dumped)
        for text in ["\(value)", String(reflecting: value), dumped, "\([value])"] {
            #expect(!text.contains("hunter2"), "\(text)")
        }
    }

    @Test func rotationRewrapsAndRetiredKeysAreGone() async throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let keys = try ring()
        let envelope = Envelope(keys: keys)
        let ctx = SealContext(.secret, tenant: "t", name: "n", version: 1)
        let value = SecretValue(Array(repeating: 7, count: 100))
        let sealed = try await envelope.seal(value, ctx)
        #expect(sealed.key.keyID == "kek-1")
        let next = try await keys.rotate()
        #expect(next == "kek-2")
        #expect(try await keys.currentKeyID() == "kek-2")
        #expect(try await envelope.open(sealed, ctx) == value, "the old key still unwraps until retired")
        await expectCode(.invalidState, "the current key cannot go") { try await keys.retire("kek-2") }
        let rewrapped = SealedValue(key: try await keys.rewrap(sealed.key), ciphertext: sealed.ciphertext)
        #expect(rewrapped.key.keyID == "kek-2")
        try await keys.retire("kek-1")
        await expectCode(.secretUnreadable, "wrapped by a retired key") { try await envelope.open(sealed, ctx) }
        #expect(try await envelope.open(rewrapped, ctx) == value)
        // The keyring on disk says the same after a reopen; it is 0600.
        let reopened = try LocalKeyring.open(path: keyring, mayCreate: false).0
        #expect(try await reopened.keyIDs() == ["kek-2"])
        #expect(try await Envelope(keys: reopened).open(rewrapped, ctx) == value)
        var st = stat()
        #expect(stat(keyring, &st) == 0 && st.st_mode & 0o777 == 0o600)
    }

    @Test func aLostOrExposedKeyringIsAStartupError() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        expectCode(.unavailable, "missing while data keys exist") {
            try LocalKeyring.open(path: keyring, mayCreate: false)
        }
        #expect(!FileManager.default.fileExists(atPath: keyring), "no silent new keyring")
        let (_, created) = try LocalKeyring.open(path: keyring, mayCreate: true)
        #expect(created)
        #expect(try LocalKeyring.open(path: keyring, mayCreate: true).created == false, "an existing one is kept")
        chmod(keyring, 0o644)
        expectCode(.unavailable, "readable by others") { try LocalKeyring.open(path: keyring, mayCreate: false) }
        chmod(keyring, 0o600)
        try Data("{}".utf8).write(to: URL(fileURLWithPath: keyring))
        chmod(keyring, 0o600)
        expectCode(.unavailable, "damaged") { try LocalKeyring.open(path: keyring, mayCreate: false) }
    }
}
