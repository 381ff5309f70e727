import Foundation
import Testing
import VivariumAudit
import VivariumCore
import VivariumStore
import VivariumTestSupport

/// Everything Vivarium keeps in one store.
typealias FullStore = AuditStore & IdentityStore & Store

/// A store implementation under test: `open` opens (or reopens) the store kept in `dir`.
struct StoreKind: Sendable, CustomTestStringConvertible {
    let name: String
    let open: @Sendable (_ dir: String) async throws -> any FullStore
    var testDescription: String { name }

    static let sqlite = StoreKind(name: "sqlite") { try SQLiteStore(path: $0 + "/v.db") }
    /// Every implementation passes the same suite.
    static let all: [StoreKind] = [.sqlite]
}

/// The store conformance suite: what any store implementation must do, written against the protocols
/// only. Slot allocation, quotas and the audit chain's order are decided in Swift in the store's
/// transaction, so these hold for every implementation of `StoreTransaction`.
@Suite struct StoreConformanceTests {
    /// A store in a fresh directory, removed afterwards; `body` gets the store and a way to reopen it.
    func with(
        _ kind: StoreKind, _ body: (any FullStore, _ reopen: () async throws -> any FullStore) async throws -> Void
    ) async throws {
        let dir = "/tmp/vivarium-store-\(randomHex(bytes: 6))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await body(try await kind.open(dir)) { try await kind.open(dir) }
    }

    /// The `base` image of `tenant` (made on first use; the `default` tenant always exists).
    func image(_ s: any FullStore, tenant: String = "default") async throws -> ImageRecord {
        if try await !s.tenants().contains(where: { $0.name.rawValue == tenant }) {
            try await s.insertTenant(
                TenantRecord(name: ResourceName(rawValue: tenant)!, createdAt: Date()), audit: AuditEvent("test"))
        }
        return try await s.insertImage(
            ImageRecord(
                tenant: tenant, name: ResourceName(rawValue: "base")!, digest: Digest.of([1]), rootfs: "/img",
                sizeBytes: 1, createdAt: Date()), audit: AuditEvent("test"))
    }

    func record(_ img: ImageRecord, _ name: String, slot: Int, limits: ResourceLimits? = nil) -> SandboxRecord {
        var spec = SandboxSpec(image: ImageReference(img.name))
        if let limits { spec.limits = limits }
        return SandboxRecord(
            id: .random(), tenant: img.tenant, name: ResourceName(rawValue: name)!, imageID: img.id,
            imageName: img.name, imageDigest: img.digest, imageRootfs: img.rootfs, spec: spec, state: .creating,
            uidSlot: slot, bundle: "/b/\(name)", cgroupPath: "/c", createdAt: Date(), expiresAt: nil)
    }

    func insert(
        _ s: any FullStore, _ img: ImageRecord, _ name: String, maxSlots: Int = 8, quota: TenantQuota? = nil,
        limits: ResourceLimits? = nil
    ) async throws -> SandboxRecord {
        try await s.insertSandbox(maxSlots: maxSlots, quota: quota, audit: AuditEvent("sandbox.create", target: name)) {
            record(img, name, slot: $0, limits: limits)
        }
    }

    @Test(arguments: StoreKind.all) func allocatesTheLowestFreeUIDSlotAndNeverShares(_ kind: StoreKind) async throws {
        try await with(kind) { s, reopen in
            let img = try await image(s)
            var slots: [Int] = []
            for n in ["a", "b", "c"] { slots.append(try await insert(s, img, n, maxSlots: 3).uidSlot) }
            #expect(slots == [0, 1, 2])
            await expectCode(.resourceExhausted) { try await insert(s, img, "d", maxSlots: 3) }
            let b = try #require(try await s.sandbox(tenant: "default", name: ResourceName(rawValue: "b")!))
            try await s.deleteSandbox(b.id, audit: AuditEvent("test"))
            // A reopened store knows which slots are taken.
            let again = try await reopen()
            #expect(try await insert(again, img, "d", maxSlots: 3).uidSlot == 1)
            await expectCode(.resourceExhausted) { try await insert(again, img, "e", maxSlots: 3) }
        }
    }

    @Test(arguments: StoreKind.all) func namesAreUniquePerTenantAndStatesPersist(_ kind: StoreKind) async throws {
        try await with(kind) { s, reopen in
            let img = try await image(s)
            let a = try await insert(s, img, "a")
            await expectCode(.alreadyExists) { try await insert(s, img, "a") }
            // Another tenant may use the name.
            let other = try await image(s, tenant: "other")
            #expect(try await insert(s, other, "a").tenant == "other")
            try await s.updateState(a.id, .running(pid: 99), audit: AuditEvent("test"))
            await expectCode(.notFound) {
                try await s.updateState(.random(), .stopped, audit: AuditEvent("test"))
            }
            // Read back from the database, not from whatever the first store keeps in memory.
            let again = try await reopen()
            #expect(try await again.sandbox(id: a.id)?.state == .running(pid: 99))
            #expect(try await again.sandbox(tenant: "default", name: a.name)?.spec == a.spec)
            #expect(try await again.sandboxes(tenant: nil, after: nil, limit: 10).count == 2)
        }
    }

    @Test(arguments: StoreKind.all) func imagesInUseCannotBeDeleted(_ kind: StoreKind) async throws {
        try await with(kind) { s, _ in
            let img = try await image(s)
            let a = try await insert(s, img, "a")
            await expectCode(.imageInUse) {
                try await s.deleteImage(tenant: "default", name: img.name, audit: AuditEvent("test"))
            }
            #expect(try await s.imageDigestsInUse() == [img.digest])
            try await s.deleteSandbox(a.id, audit: AuditEvent("test"))
            #expect(try await s.deleteImage(tenant: "default", name: img.name, audit: AuditEvent("test")).id == img.id)
            #expect(try await s.image(tenant: "default", name: img.name) == nil)
            #expect(try await s.imageDigestsInUse().isEmpty)
        }
    }

    @Test(arguments: StoreKind.all) func paginatesByNameAndFindsExpired(_ kind: StoreKind) async throws {
        try await with(kind) { s, _ in
            let img = try await image(s)
            for n in ["c", "a", "b"] { _ = try await insert(s, img, n) }
            #expect(try await s.sandboxes(tenant: "default", after: nil, limit: 2).map(\.name.rawValue) == ["a", "b"])
            #expect(try await s.sandboxes(tenant: "default", after: "b", limit: 2).map(\.name.rawValue) == ["c"])
            _ = try await s.insertSandbox(maxSlots: 8, quota: nil, audit: AuditEvent("test")) { slot in
                var r = record(img, "e", slot: slot)
                r.expiresAt = Date().addingTimeInterval(-1)
                return r
            }
            #expect(try await s.expiredSandboxes(now: Date()).map(\.name.rawValue) == ["e"])
            #expect(try await s.sandboxCount() == 4)
        }
    }

    @Test(arguments: StoreKind.all) func aCreateBeyondTheTenantsQuotaIsRefusedAndLeavesNothing(_ kind: StoreKind)
        async throws
    {
        try await with(kind) { s, _ in
            let img = try await image(s)
            let quota = TenantQuota(sandboxes: 2, memoryBytes: 1 << 30, milliCPUs: 1500, diskBytes: 2 << 30)
            _ = try await insert(s, img, "a", quota: quota)  // 512M, 1 CPU and 1G of disk: the defaults
            let head = try await s.auditHead()
            for (name, limits) in [
                ("cpu", ResourceLimits(memoryBytes: 64 << 20, milliCPUs: 1000, pids: 64, diskBytes: 16 << 20)),
                ("mem", ResourceLimits(memoryBytes: 768 << 20, milliCPUs: 100, pids: 64, diskBytes: 16 << 20)),
                ("disk", ResourceLimits(memoryBytes: 64 << 20, milliCPUs: 100, pids: 64, diskBytes: (1 << 30) + 1)),
            ] {
                await expectCode(.quotaExceeded, "\(name)") {
                    try await insert(s, img, name, quota: quota, limits: limits)
                }
            }
            #expect(try await s.auditHead() == head, "a refused create appends nothing in its transaction")
            _ = try await insert(
                s, img, "b", quota: quota,
                limits: ResourceLimits(memoryBytes: 256 << 20, milliCPUs: 500, pids: 64, diskBytes: 1 << 30))
            await expectCode(.quotaExceeded, "sandbox count") { try await insert(s, img, "c", quota: quota) }
            #expect(try await s.sandboxCount() == 2)
            // Another tenant's quota is its own.
            let other = try await image(s, tenant: "other")
            _ = try await insert(s, other, "a", quota: quota)
        }
    }

    @Test(arguments: StoreKind.all) func aTransactionThatThrowsLeavesNoRowAndNoRecord(_ kind: StoreKind) async throws {
        struct Abort: Error {}
        try await with(kind) { s, reopen in
            let img = try await image(s)
            let head = try #require(try await s.auditHead())
            await #expect(throws: Abort.self) {
                try await s.transaction("test") { tx in
                    try await tx.insertSandboxRow(record(img, "gone", slot: 5))
                    #expect(try await tx.sandboxNameTaken(tenant: "default", name: ResourceName(rawValue: "gone")!))
                    _ = try await tx.appendAudit([AuditEvent("sandbox.create", target: "gone")])
                    throw Abort()
                }
            }
            let again = try await reopen()
            #expect(try await again.sandbox(tenant: "default", name: ResourceName(rawValue: "gone")!) == nil)
            #expect(try await again.auditHead() == head)
            // The slot is free again.
            #expect(try await insert(again, img, "next").uidSlot == 0)
        }
    }

    /// Writers from many tasks at once: the chain's head is locked in each transaction, so sequence
    /// numbers are dense and every link verifies, whatever the interleaving.
    @Test(arguments: StoreKind.all) func concurrentWritersKeepTheChainOrderedAndVerifiable(_ kind: StoreKind)
        async throws
    {
        try await with(kind) { s, reopen in
            let img = try await image(s)
            let n = 40
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<n {
                    group.addTask {
                        let r = try await insert(s, img, "box\(i)", maxSlots: n)
                        try await s.updateState(r.id, .running(pid: Int32(100 + i)), audit: AuditEvent("sandbox.start"))
                        try await s.append([AuditEvent("sandbox.exec", target: r.name.rawValue)])
                    }
                }
                try await group.waitForAll()
            }
            let again = try await reopen()
            let records = try await again.auditRecords(AuditQuery(limit: 10_000))
            let all = try await again.allSandboxes()
            #expect(Set(all.map(\.uidSlot)).count == n, "no slot shared")
            // 1 image + 3 per sandbox.
            #expect(records.map(\.seq) == Array(1...Int64(1 + 3 * n)))
            var verifier = AuditVerifier(publicKey: AuditKey().publicKey, checkpoints: [])
            for r in records { verifier.add(r) }
            #expect(verifier.finish().problems == [])
            #expect(try await again.auditHead()?.seq == Int64(1 + 3 * n))
        }
    }

    @Test(arguments: StoreKind.all) func aRefreshTokenUsedTwiceEndsItsFamily(_ kind: StoreKind) async throws {
        try await with(kind) { s, reopen in
            try await s.insertTenant(
                TenantRecord(name: ResourceName(rawValue: "acme")!, createdAt: Date()), audit: AuditEvent("test"))
            let p = PrincipalRecord(
                id: "pr_1", tenant: "acme", name: ResourceName(rawValue: "ann")!, kind: .user, role: .member,
                disabled: false, createdAt: Date())
            try await s.insertPrincipal(p, audit: AuditEvent("test"))
            await expectCode(.alreadyExists) { try await s.insertPrincipal(p, audit: AuditEvent("test")) }
            let r = RefreshRecord(
                hash: "h1", family: "f1", principalID: p.id, scopes: [.exec], boundSandbox: nil,
                expiresAt: Date().addingTimeInterval(60), usedAt: nil)
            try await s.insertRefresh(r, audit: AuditEvent("test"))
            let first = try await s.useRefresh(hash: "h1", now: Date()) { _, _ in AuditEvent("token.refresh") }
            guard case .rotated(let used) = first else {
                Issue.record("first use: \(first)")
                return
            }
            #expect(used.family == "f1")
            let again = try await reopen()
            let second = try await again.useRefresh(hash: "h1", now: Date()) { _, _ in AuditEvent("token.reuse") }
            #expect(second == .reused(family: "f1", principalID: p.id))
            #expect(try await again.useRefresh(hash: "nope", now: Date()) { _, _ in nil } == .invalid)
            let stored = try #require(try await again.principal(tenant: "acme", name: p.name))
            #expect(stored.id == p.id && stored.role == p.role && stored.kind == p.kind && !stored.disabled)
            #expect(abs(stored.createdAt.timeIntervalSince(p.createdAt)) < 0.001)
        }
    }
}
