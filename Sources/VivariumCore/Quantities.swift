import Foundation

/// Parsers for human quantities at the boundary: sizes ("512M", "1GiB", "1048576") and durations
/// ("30m", "1h30m", "45s", "90").
public enum Quantity {
    public static func parseBytes(_ raw: String) throws -> Int64 {
        let s = raw.trimmingCharacters(in: .whitespaces)
        let digits = s.prefix { $0.isASCII && $0.isNumber }
        let unit = s.dropFirst(digits.count).lowercased()
        guard !digits.isEmpty, digits.count <= 15, let n = Int64(digits) else {
            throw VivariumError(
                .invalidArgument, "invalid size '\(raw)': use a number with an optional K, M, G or T suffix")
        }
        let mult: Int64
        switch unit {
        case "", "b": mult = 1
        case "k", "kb", "kib": mult = 1 << 10
        case "m", "mb", "mib": mult = 1 << 20
        case "g", "gb", "gib": mult = 1 << 30
        case "t", "tb", "tib": mult = 1 << 40
        default: throw VivariumError(.invalidArgument, "invalid size unit in '\(raw)': use K, M, G or T")
        }
        let (v, overflow) = n.multipliedReportingOverflow(by: mult)
        guard !overflow else { throw VivariumError(.invalidArgument, "size '\(raw)' is too large") }
        return v
    }

    public static func parseSeconds(_ raw: String) throws -> Int64 {
        let s = raw.trimmingCharacters(in: .whitespaces).lowercased()
        guard !s.isEmpty, s.count <= 32 else { throw VivariumError(.invalidArgument, "invalid duration '\(raw)'") }
        if let n = Int64(s) { return n }
        var total: Int64 = 0
        var num = ""
        for c in s {
            if c.isASCII && c.isNumber {
                num.append(c)
                continue
            }
            guard let n = Int64(num) else {
                throw VivariumError(.invalidArgument, "invalid duration '\(raw)': use e.g. 90s, 30m, 1h30m, 2d")
            }
            switch c {
            case "s": total += n
            case "m": total += n * 60
            case "h": total += n * 3600
            case "d": total += n * 86400
            default: throw VivariumError(.invalidArgument, "invalid duration unit '\(c)' in '\(raw)'")
            }
            num = ""
        }
        guard num.isEmpty else { throw VivariumError(.invalidArgument, "invalid duration '\(raw)': missing unit") }
        return total
    }

    public static func formatBytes(_ b: Int64) -> String {
        let units: [(Int64, String)] = [(1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")]
        for (m, u) in units where b >= m && b % m == 0 { return "\(b / m)\(u)" }
        for (m, u) in units where b >= m {
            let v = Double(b) / Double(m)
            return "\((v * 10).rounded() / 10)\(u)"
        }
        return "\(b)"
    }
}
