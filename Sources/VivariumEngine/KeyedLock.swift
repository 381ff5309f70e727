/// Serialises work per key (one sandbox's lifecycle operations) while other keys proceed.
actor KeyedLock {
    private var held: Set<String> = []
    private var waiters: [String: [CheckedContinuation<Void, Never>]] = [:]

    func withLock<T: Sendable>(_ key: String, _ body: @Sendable () async throws -> T) async throws -> T {
        await acquire(key)
        do {
            let r = try await body()
            release(key)
            return r
        } catch {
            release(key)
            throw error
        }
    }

    private func acquire(_ key: String) async {
        if !held.contains(key) {
            held.insert(key)
            return
        }
        await withCheckedContinuation { waiters[key, default: []].append($0) }
    }

    private func release(_ key: String) {
        if var q = waiters[key], !q.isEmpty {
            let next = q.removeFirst()
            waiters[key] = q.isEmpty ? nil : q
            next.resume()  // ownership passes to the next waiter
        } else {
            held.remove(key)
        }
    }
}

/// Many holders at once (`shared`), or one alone (`exclusive`): ingests into the image store share it,
/// its garbage collection excludes them. A waiting exclusive holder goes before later shared ones.
actor SharedExclusiveLock {
    private var sharers = 0
    private var exclusive = false
    private var waitingExclusive: [CheckedContinuation<Void, Never>] = []
    private var waitingShared: [CheckedContinuation<Void, Never>] = []

    func shared<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        if exclusive || !waitingExclusive.isEmpty {
            await withCheckedContinuation { waitingShared.append($0) }
        } else {
            sharers += 1
        }
        defer { releaseShared() }
        return try await body()
    }

    func exclusive<T: Sendable>(_ body: @Sendable () async throws -> T) async rethrows -> T {
        if exclusive || sharers > 0 {
            await withCheckedContinuation { waitingExclusive.append($0) }
        } else {
            exclusive = true
        }
        defer { releaseExclusive() }
        return try await body()
    }

    private func releaseShared() {
        sharers -= 1
        if sharers == 0, !waitingExclusive.isEmpty {
            exclusive = true
            waitingExclusive.removeFirst().resume()
        }
    }

    private func releaseExclusive() {
        if !waitingShared.isEmpty {
            exclusive = false
            sharers = waitingShared.count
            for w in waitingShared { w.resume() }
            waitingShared = []
        } else if !waitingExclusive.isEmpty {
            waitingExclusive.removeFirst().resume()
        } else {
            exclusive = false
        }
    }
}
