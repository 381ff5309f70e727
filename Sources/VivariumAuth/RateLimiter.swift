import Foundation

/// Token buckets per key (a source address, a principal): `rate` tokens a second up to `burst`.
/// Keys idle long enough to refill are forgotten, so memory stays bounded by the active keys.
public final class RateLimiter: Sendable {
    public let rate: Double
    public let burst: Double
    let maxKeys: Int
    private let buckets = LockedBox([String: (tokens: Double, at: TimeInterval)]())

    public init(rate: Double, burst: Double, maxKeys: Int = 100_000) {
        self.rate = rate
        self.burst = burst
        self.maxKeys = maxKeys
    }

    /// Takes one token. Returns nil when allowed, or the seconds to wait before one is available.
    public func take(_ key: String, now: TimeInterval = Date().timeIntervalSince1970) -> Int? {
        buckets.update { b in
            if b.count >= maxKeys {
                // Forget keys that have refilled; if that is not enough, start over (memory stays bounded).
                b = b.filter { now - $0.value.at < burst / rate }
                if b.count >= maxKeys / 2 { b.removeAll(keepingCapacity: true) }
            }
            var (tokens, at) = b[key] ?? (burst, now)
            tokens = min(burst, tokens + (now - at) * rate)
            guard tokens >= 1 else {
                b[key] = (tokens, now)
                return max(1, Int(((1 - tokens) / rate).rounded(.up)))
            }
            b[key] = (tokens - 1, now)
            return nil
        }
    }

    /// Whether a key has no token left, without taking one.
    public func exhausted(_ key: String, now: TimeInterval = Date().timeIntervalSince1970) -> Int? {
        buckets.update { b in
            guard let (tokens, at) = b[key] else { return nil }
            let t = min(burst, tokens + (now - at) * rate)
            return t >= 1 ? nil : max(1, Int(((1 - t) / rate).rounded(.up)))
        }
    }
}
