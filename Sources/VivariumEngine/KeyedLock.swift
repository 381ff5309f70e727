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
