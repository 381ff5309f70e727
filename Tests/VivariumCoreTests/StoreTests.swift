import Foundation
import Testing
import VivariumAudit
import VivariumCore
import VivariumEngine
import VivariumStore

@Suite struct StoreTests {
    func withStore(_ body: (SQLiteStore) throws -> Void) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vivarium-store-\(randomHex(bytes: 6))")
            .path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try body(try SQLiteStore(path: dir + "/v.db"))
    }

    func image(_ s: SQLiteStore) throws -> ImageRecord {
        try s.insertImage(
            ImageRecord(
                tenant: "default", name: ResourceName(rawValue: "base")!, digest: Digest.of([1]), rootfs: "/img",
                sizeBytes: 1, createdAt: Date()), audit: AuditEvent("test"))
    }

    func record(_ img: ImageRecord, _ name: String, slot: Int) -> SandboxRecord {
        SandboxRecord(
            id: .random(), tenant: "default", name: ResourceName(rawValue: name)!, imageID: img.id, imageName: img.name,
            imageDigest: img.digest, imageRootfs: img.rootfs, spec: SandboxSpec(image: img.name), state: .creating,
            uidSlot: slot, bundle: "/b/\(name)", cgroupPath: "/c", createdAt: Date(), expiresAt: nil)
    }

    @Test func allocatesTheLowestFreeUIDSlotAndNeverShares() throws {
        try withStore { s in
            let img = try image(s)
            let a = try s.insertSandbox(maxSlots: 3, quota: nil, audit: AuditEvent("test")) {
                record(img, "a", slot: $0)
            }
            let b = try s.insertSandbox(maxSlots: 3, quota: nil, audit: AuditEvent("test")) {
                record(img, "b", slot: $0)
            }
            let c = try s.insertSandbox(maxSlots: 3, quota: nil, audit: AuditEvent("test")) {
                record(img, "c", slot: $0)
            }
            #expect([a.uidSlot, b.uidSlot, c.uidSlot] == [Int](0...2))
            #expect(throws: VivariumError.self) {
                try s.insertSandbox(maxSlots: 3, quota: nil, audit: AuditEvent("test")) { record(img, "d", slot: $0) }
            }
            try s.deleteSandbox(b.id, audit: AuditEvent("test"))
            let d = try s.insertSandbox(maxSlots: 3, quota: nil, audit: AuditEvent("test")) {
                record(img, "d", slot: $0)
            }
            #expect(d.uidSlot == 1)
        }
    }

    @Test func namesAreUniquePerTenantAndStatesPersist() throws {
        try withStore { s in
            let img = try image(s)
            let a = try s.insertSandbox(maxSlots: 8, quota: nil, audit: AuditEvent("test")) {
                record(img, "a", slot: $0)
            }
            do {
                _ = try s.insertSandbox(maxSlots: 8, quota: nil, audit: AuditEvent("test")) {
                    record(img, "a", slot: $0)
                }
                Issue.record("duplicate name accepted")
            } catch let e as VivariumError {
                #expect(e.code == .alreadyExists)
            }
            try s.updateState(a.id, .running(pid: 99), audit: AuditEvent("test"))
            #expect(try s.sandbox(id: a.id)?.state == .running(pid: 99))
            #expect(try s.sandbox(tenant: "default", name: a.name)?.spec == a.spec)
        }
    }

    @Test func imagesInUseCannotBeDeleted() throws {
        try withStore { s in
            let img = try image(s)
            let a = try s.insertSandbox(maxSlots: 8, quota: nil, audit: AuditEvent("test")) {
                record(img, "a", slot: $0)
            }
            do {
                _ = try s.deleteImage(tenant: "default", name: img.name, audit: AuditEvent("test"))
                Issue.record("image in use was deleted")
            } catch let e as VivariumError {
                #expect(e.code == .imageInUse)
            }
            try s.deleteSandbox(a.id, audit: AuditEvent("test"))
            #expect(try s.deleteImage(tenant: "default", name: img.name, audit: AuditEvent("test")).id == img.id)
            #expect(try s.image(tenant: "default", name: img.name) == nil)
        }
    }

    @Test func paginatesByNameAndFindsExpired() throws {
        try withStore { s in
            let img = try image(s)
            for n in ["c", "a", "b"] {
                _ = try s.insertSandbox(maxSlots: 8, quota: nil, audit: AuditEvent("test")) { record(img, n, slot: $0) }
            }
            #expect(try s.sandboxes(tenant: "default", after: nil, limit: 2).map(\.name.rawValue) == ["a", "b"])
            #expect(try s.sandboxes(tenant: "default", after: "b", limit: 2).map(\.name.rawValue) == ["c"])
            var e = record(img, "e", slot: 0)
            e.expiresAt = Date().addingTimeInterval(-1)
            let expiring = e
            _ = try s.insertSandbox(maxSlots: 8, quota: nil, audit: AuditEvent("test")) { slot in
                var r = expiring
                r.uidSlot = slot
                return r
            }
            #expect(try s.expiredSandboxes(now: Date()).map(\.name.rawValue) == ["e"])
        }
    }
}

@Suite struct UIDRangeRegistryTests {
    @Test func refusesOverlappingBlocksOfAnotherInstance() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "vivarium-uidreg-\(randomHex(bytes: 6))"
        ).path
        try FileManager.default.createDirectory(atPath: dir + "/a", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/b", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let reg = UIDRangeRegistry(path: dir + "/ranges.json")
        try reg.claim(stateDir: dir + "/a", base: 1 << 28, count: 1 << 20)
        try reg.claim(stateDir: dir + "/a", base: 1 << 28, count: 1 << 20)  // the same instance again
        #expect(throws: VivariumError.self) {
            try reg.claim(stateDir: dir + "/b", base: (1 << 28) + (1 << 19), count: 1 << 20)
        }
        try reg.claim(stateDir: dir + "/b", base: (1 << 28) + (1 << 20), count: 1 << 20)
        // A vanished instance releases its block.
        try FileManager.default.removeItem(atPath: dir + "/a")
        try reg.claim(stateDir: dir + "/b", base: 1 << 28, count: 1 << 20)
    }
}

@Suite struct QuotaTests {
    @Test func aCreateBeyondTheTenantsQuotaIsRefusedAndLeavesNothing() throws {
        try StoreTests().withStore { s in
            let img = try StoreTests().image(s)
            let quota = TenantQuota(sandboxes: 2, memoryBytes: 1 << 30, milliCPUs: 1500)
            // 512M and 1 CPU: the defaults.
            _ = try s.insertSandbox(maxSlots: 8, quota: quota, audit: AuditEvent("test")) {
                StoreTests().record(img, "a", slot: $0)
            }
            for (name, limits) in [
                ("cpu", ResourceLimits(memoryBytes: 64 << 20, milliCPUs: 1000, pids: 64)),
                ("mem", ResourceLimits(memoryBytes: 768 << 20, milliCPUs: 100, pids: 64)),
            ] {
                do {
                    _ = try s.insertSandbox(maxSlots: 8, quota: quota, audit: AuditEvent("test")) { slot in
                        var r = StoreTests().record(img, name, slot: slot)
                        r.spec.limits = limits
                        return r
                    }
                    Issue.record("\(name) quota not enforced")
                } catch let e as VivariumError {
                    #expect(e.code == .quotaExceeded)
                }
            }
            _ = try s.insertSandbox(maxSlots: 8, quota: quota, audit: AuditEvent("test")) { slot in
                var r = StoreTests().record(img, "b", slot: slot)
                r.spec.limits = ResourceLimits(memoryBytes: 256 << 20, milliCPUs: 500, pids: 64)
                return r
            }
            do {
                _ = try s.insertSandbox(maxSlots: 8, quota: quota, audit: AuditEvent("test")) {
                    StoreTests().record(img, "c", slot: $0)
                }
                Issue.record("sandbox count quota not enforced")
            } catch let e as VivariumError {
                #expect(e.code == .quotaExceeded)
            }
            #expect(try s.sandboxCount() == 2)
        }
    }
}
