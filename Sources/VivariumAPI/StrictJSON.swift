import Foundation
import VivariumCore

/// The checks `JSONDecoder` does not make: a request body holds no object with the same key twice, and
/// no field the request type does not know (a misspelt `memory_byte` is an error, not a default).
enum StrictJSON {
    /// A request body (or a stream's first message) decoded strictly: no null, no key twice, no field the
    /// type does not know; errors are `bad_request` naming the place.
    static func decode<T: Codable>(_ type: T.Type, from data: Data) throws -> T {
        // null is never a value of a request field: an optional field is left out, not nulled.
        if data.contains(UInt8(ascii: "n")), let json = try? JSONSerialization.jsonObject(with: data),
            let at = firstNull(json, path: "")
        {
            throw VivariumError(
                .badRequest, "invalid JSON body: null at \(at.isEmpty ? "top level" : String(at.prefix(100)))")
        }
        if let key = duplicateKey(data) {
            throw VivariumError(.badRequest, "invalid JSON body: duplicate key \(key.prefix(100))")
        }
        do {
            let value = try WireCoding.decoder().decode(T.self, from: data)
            if let sent = try? JSONSerialization.jsonObject(with: data),
                let known = try? JSONSerialization.jsonObject(with: WireCoding.encoder().encode(value)),
                let field = unknownField(sent: sent, known: known)
            {
                throw VivariumError(.badRequest, "invalid JSON body: unknown field \(field.prefix(100))")
            }
            return value
        } catch let e as VivariumError {
            throw e
        } catch let e as DecodingError {
            throw VivariumError(.badRequest, "invalid JSON body: \(describe(e))")
        } catch {
            throw VivariumError(.badRequest, "invalid JSON body")
        }
    }

    /// The path of the first null in a decoded JSON value, if any.
    static func firstNull(_ v: Any, path: String) -> String? {
        switch v {
        case is NSNull: return path
        case let o as [String: Any]:
            for (k, x) in o { if let p = firstNull(x, path: path.isEmpty ? k : path + "." + k) { return p } }
        case let a as [Any]:
            for (i, x) in a.enumerated() { if let p = firstNull(x, path: path + "[\(i)]") { return p } }
        default: break
        }
        return nil
    }

    static func describe(_ e: DecodingError) -> String {
        func path(_ c: DecodingError.Context) -> String {
            let p = c.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "" : " at \(p.prefix(100))"
        }
        switch e {
        case .typeMismatch(_, let c): return "wrong type\(path(c))"
        case .valueNotFound(_, let c): return "missing value\(path(c))"
        case .keyNotFound(let k, let c): return "missing field \(k.stringValue.prefix(64))\(path(c))"
        case .dataCorrupted(let c): return "malformed\(path(c))"
        @unknown default: return "malformed"
        }
    }

    /// The first key that occurs twice in one object, by its path; nil when there is none. One linear
    /// pass over the bytes; escapes are decoded, so `"a"` and `"\u0061"` are the same key.
    static func duplicateKey(_ data: Data) -> String? {
        let b = [UInt8](data)
        var i = 0
        // One entry per open object (its keys so far) or array (nil).
        var stack: [(keys: Set<String>, path: String)?] = []
        var expectKey = false
        var lastKey = ""
        while i < b.count {
            switch b[i] {
            case UInt8(ascii: "{"):
                let parent = stack.last.flatMap { $0 }?.path
                stack.append((keys: [], path: parent.map { $0.isEmpty ? lastKey : $0 + "." + lastKey } ?? ""))
                expectKey = true
            case UInt8(ascii: "["):
                stack.append(nil)
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if !stack.isEmpty { stack.removeLast() }
                expectKey = false
            case UInt8(ascii: ","):
                expectKey = stack.last.map { $0 != nil } ?? false
            case UInt8(ascii: "\""):
                guard let (s, end) = string(b, from: i) else { return nil }  // the decoder names the error
                i = end
                if expectKey, let top = stack.last, var object = top {
                    if object.keys.contains(s) { return object.path.isEmpty ? s : object.path + "." + s }
                    object.keys.insert(s)
                    stack[stack.count - 1] = object
                    lastKey = s
                    expectKey = false
                }
                continue
            default: break
            }
            i += 1
        }
        return nil
    }

    /// The string token starting at the quote at `start`, unescaped, and the index after its closing quote.
    static func string(_ b: [UInt8], from start: Int) -> (String, Int)? {
        var out: [UInt8] = []
        var i = start + 1
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\"") { return (String(decoding: out, as: UTF8.self), i + 1) }
            if c == UInt8(ascii: "\\") {
                guard i + 1 < b.count else { return nil }
                let e = b[i + 1]
                if e == UInt8(ascii: "u") {
                    guard i + 5 < b.count,
                        let v = UInt32(String(decoding: b[(i + 2)...(i + 5)], as: UTF8.self), radix: 16)
                    else { return nil }
                    // A surrogate half stays in its escaped form (lowercased): it is compared as written.
                    if let scalar = UnicodeScalar(v) {
                        out += Array(String(Character(scalar)).utf8)
                    } else {
                        out += Array(String(decoding: b[i...(i + 5)], as: UTF8.self).lowercased().utf8)
                    }
                    i += 6
                    continue
                }
                let map: [UInt8: UInt8] = [
                    UInt8(ascii: "n"): 0x0a, UInt8(ascii: "t"): 0x09, UInt8(ascii: "r"): 0x0d, UInt8(ascii: "b"): 0x08,
                    UInt8(ascii: "f"): 0x0c,
                ]
                out.append(map[e] ?? e)
                i += 2
                continue
            }
            out.append(c)
            i += 1
        }
        return nil
    }

    /// The first field of `sent` that the decoded value does not carry (`known` is the value encoded
    /// again): a field the request type has no property for. Values never hold null (refused before).
    static func unknownField(sent: Any, known: Any, path: String = "") -> String? {
        switch (sent, known) {
        case (let s as [String: Any], let k as [String: Any]):
            for key in s.keys.sorted() {
                let p = path.isEmpty ? key : path + "." + key
                guard let kv = k[key] else { return p }
                if let deeper = unknownField(sent: s[key]!, known: kv, path: p) { return deeper }
            }
        case (let s as [Any], let k as [Any]) where s.count == k.count:
            for (i, pair) in zip(s, k).enumerated() {
                if let deeper = unknownField(sent: pair.0, known: pair.1, path: path + "[\(i)]") { return deeper }
            }
        default: break
        }
        return nil
    }
}
