import Foundation
import Glibc

/// Network namespaces a test owns, so that no packet leaves the machine: `host` stands in for the host
/// (the daemon puts its bridge, ruleset and forwarding there), `internet` is a public-range address
/// behind it, `metadata` owns 169.254.169.254, and `internet` also holds a private-range address that
/// `host` routes to. Listeners answer every TCP connection and UDP datagram with their own name and the
/// peer's address. `close()` deletes every namespace, and with them every interface and listener socket.
public final class NetworkLab: @unchecked Sendable {
    public let host: String
    public let internet: String
    public let metadata: String
    /// The `internet` namespace's public-range address.
    public static let internetAddress = "45.67.89.2"
    /// The stand-in host's own address toward `internet` (what masquerade rewrites sources to).
    public static let hostAddress = "45.67.89.1"
    public static let metadataAddress = "169.254.169.254"
    /// A private-range address in `internet`, routed to from `host`.
    public static let privateAddress = "192.168.77.2"
    var listeners: [Process] = []

    public init() throws {
        let tag = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        host = "vvt-h-" + tag
        internet = "vvt-i-" + tag
        metadata = "vvt-m-" + tag
        do {
            for ns in [host, internet, metadata] { try ip("netns", "add", ns) }
            for ns in [host, internet, metadata] { try ip("-n", ns, "link", "set", "lo", "up") }
            try link(host, "to-inet", Self.hostAddress + "/24", internet, "eth0", Self.internetAddress + "/24")
            try ip("-n", internet, "addr", "add", Self.privateAddress + "/24", "dev", "eth0")
            try ip("-n", host, "route", "add", "192.168.77.0/24", "via", Self.internetAddress)
            try ip("-n", internet, "route", "add", "default", "via", Self.hostAddress)
            try link(host, "to-meta", "169.254.0.1/16", metadata, "eth0", Self.metadataAddress + "/16")
            try ip("-n", metadata, "route", "add", "default", "via", "169.254.0.1")
            // Bridged frames skip the IP hooks here, as on many hosts: the bridge table alone must hold.
            if FileManager.default.fileExists(atPath: "/proc/sys/net/bridge/bridge-nf-call-iptables") {
                try run(host, ["/usr/sbin/sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0"])
            }
        } catch {
            close()
            throw error
        }
    }

    /// The path the daemon's `network_netns` takes.
    public var hostPath: String { "/run/netns/" + host }

    func ip(_ args: String...) throws {
        let r = try runCommand("/usr/sbin/ip", args)
        guard r.status == 0 else { throw LabError("ip \(args.joined(separator: " ")): \(r.stderr)") }
    }

    func link(_ a: String, _ aName: String, _ aAddr: String, _ b: String, _ bName: String, _ bAddr: String) throws {
        try ip("-n", a, "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b)
        try ip("-n", a, "addr", "add", aAddr, "dev", aName)
        try ip("-n", b, "addr", "add", bAddr, "dev", bName)
        try ip("-n", a, "link", "set", aName, "up")
        try ip("-n", b, "link", "set", bName, "up")
    }

    /// Starts TCP and UDP listeners on `address:port` in `namespace` that answer "NAME from PEER".
    public func listen(_ namespace: String, _ address: String, port: Int, name: String) throws {
        let family = address.contains(":") ? "AF_INET6" : "AF_INET"
        let script = """
            import socket, threading
            def tcp():
                s = socket.socket(socket.\(family), socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("\(address)", \(port)))
                s.listen(16)
                while True:
                    c, peer = s.accept()
                    c.sendall(("\(name) from %s\\n" % peer[0]).encode())
                    c.close()
            def udp():
                s = socket.socket(socket.\(family), socket.SOCK_DGRAM)
                s.bind(("\(address)", \(port)))
                while True:
                    _, peer = s.recvfrom(2048)
                    s.sendto(("\(name) from %s\\n" % peer[0]).encode(), peer)
            threading.Thread(target=udp, daemon=True).start()
            print("ready", flush=True)
            tcp()
            """
        try start(namespace, script, what: "listener \(name) on \(address):\(port)")
    }

    /// Starts a DNS server on `address:53` in `namespace` that answers A queries for `records` (name →
    /// IPv4 address, TTL 60) and NXDOMAIN for every other name.
    public func serveDNS(_ namespace: String, _ address: String, records: [String: String]) throws {
        let table = records.map { "\"\($0.key.lowercased())\": \"\($0.value)\"" }.joined(separator: ", ")
        let script = """
            import socket, struct
            records = {\(table)}
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("\(address)", 53))
            print("ready", flush=True)
            while True:
                q, peer = s.recvfrom(2048)
                i, labels = 12, []
                while q[i]:
                    labels.append(q[i + 1:i + 1 + q[i]].decode().lower())
                    i += 1 + q[i]
                question = q[12:i + 5]
                name = ".".join(labels)
                flags = 0x8180 if name in records else 0x8183
                answer = b""
                if name in records:
                    answer = b"\\xc0\\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(records[name])
                s.sendto(q[:2] + struct.pack(">HHHHH", flags, 1, 1 if answer else 0, 0, 0) + question + answer, peer)
            """
        try start(namespace, script, what: "DNS server on \(address)")
    }

    func start(_ namespace: String, _ script: String, what: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", namespace, "/usr/bin/python3", "-c", script]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        listeners.append(p)
        // Wait for the bind.
        let line = out.fileHandleForReading.readData(ofLength: 6)
        guard String(decoding: line, as: UTF8.self).hasPrefix("ready") else { throw LabError("\(what) did not start") }
    }

    /// Runs `args` in `namespace`; returns the result.
    @discardableResult
    public func run(_ namespace: String, _ args: [String]) throws -> CommandResult {
        try runCommand("/usr/sbin/ip", ["netns", "exec", namespace] + args)
    }

    /// Interface names in `namespace`.
    public func links(_ namespace: String) -> [String] {
        let out = (try? runCommand("/usr/sbin/ip", ["-n", namespace, "-o", "link", "show"]).stdout) ?? ""
        return out.split(separator: "\n").compactMap { line in
            let f = line.split(separator: ":", maxSplits: 2)
            guard f.count >= 2 else { return nil }
            return String(f[1].trimmingCharacters(in: .whitespaces).split(separator: "@").first ?? "")
        }
    }

    /// Kills the listeners (they are ours, by PID) and deletes the namespaces.
    public func close() {
        for p in listeners where p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        listeners = []
        for ns in [host, internet, metadata] { _ = try? runCommand("/usr/sbin/ip", ["netns", "delete", ns]) }
    }

    deinit { close() }
}

public struct LabError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}

/// A static probe a test puts into a box: `/netprobe tcp|udp|icmp ADDRESS [PORT]` tries once with a
/// one-second timeout and prints the answer, or `timeout`, or `error <errno>`; IPv6 addresses may carry
/// a scope (`fe80::1%eth0`). A reachable host answers a closed TCP or UDP port with `error 111`
/// (refused), so only a dropped packet prints `timeout`. `/netprobe serve PORT` is an HTTP server that
/// answers with the request's own head, and echoes bytes after an Upgrade request (101).
public enum NetProbe {
    static let source = #"""
        #define _GNU_SOURCE
        #include <errno.h>
        #include <stdlib.h>
        #include <netdb.h>
        #include <netinet/in.h>
        #include <netinet/ip_icmp.h>
        #include <poll.h>
        #include <stdio.h>
        #include <string.h>
        #include <sys/socket.h>
        #include <unistd.h>
        static int finish(int fd) {
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 1000) <= 0) { puts("timeout"); return 1; }
            char buf[512];
            ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
            if (n < 0) { printf("error %d\n", errno); return 1; }
            buf[n] = 0;
            fputs(buf, stdout);
            return 0;
        }
        // An HTTP server for the ingress's tests: answers each request with its own head as the body; an
        // Upgrade request gets 101 and then an echo of whatever comes.
        static int serve(int port) {
            int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
            setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
            if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 16) < 0) { printf("error %d\n", errno); return 1; }
            for (;;) {
                int c = accept(s, NULL, NULL);
                if (c < 0) continue;
                char head[16384];
                size_t n = 0;
                while (n < sizeof head - 1) {
                    ssize_t r = recv(c, head + n, sizeof head - 1 - n, 0);
                    if (r <= 0) break;
                    n += r;
                    head[n] = 0;
                    if (strstr(head, "\r\n\r\n")) break;
                }
                head[n] = 0;
                if (strcasestr(head, "\nupgrade:")) {
                    const char *ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
                    send(c, ok, strlen(ok), 0);
                    char buf[4096];
                    ssize_t r;
                    while ((r = recv(c, buf, sizeof buf, 0)) > 0) send(c, buf, r, 0);
                } else {
                    char top[128];
                    int t = snprintf(top, sizeof top, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n", n);
                    send(c, top, t, 0);
                    send(c, head, n, 0);
                }
                close(c);
            }
        }
        int main(int argc, char **argv) {
            if (argc == 3 && strcmp(argv[1], "serve") == 0) return serve(atoi(argv[2]));
            if (argc < 3) return 2;
            int icmp = strcmp(argv[1], "icmp") == 0, udp = strcmp(argv[1], "udp") == 0;
            struct addrinfo hints = {0}, *ai;
            hints.ai_flags = AI_NUMERICHOST;
            hints.ai_socktype = udp ? SOCK_DGRAM : SOCK_STREAM;
            if (getaddrinfo(argv[2], argc > 3 ? argv[3] : "0", &hints, &ai) != 0) { puts("bad address"); return 2; }
            int fd = socket(ai->ai_family, icmp ? SOCK_DGRAM : ai->ai_socktype,
                            icmp ? (ai->ai_family == AF_INET ? IPPROTO_ICMP : IPPROTO_ICMPV6) : 0);
            if (fd < 0) { printf("error %d\n", errno); return 1; }
            if (icmp) {
                struct icmphdr h = {0};
                h.type = ai->ai_family == AF_INET ? ICMP_ECHO : 128;
                if (sendto(fd, &h, sizeof h, 0, ai->ai_addr, ai->ai_addrlen) < 0) { printf("error %d\n", errno); return 1; }
                struct pollfd p = {fd, POLLIN, 0};
                if (poll(&p, 1, 1000) <= 0) { puts("timeout"); return 1; }
                puts("echo reply");
                return 0;
            }
            if (udp) {
                // Connected, so that a reachable closed port answers ECONNREFUSED instead of a silence.
                if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 || send(fd, "x", 1, 0) < 0) {
                    printf("error %d\n", errno);
                    return 1;
                }
                return finish(fd);
            }
            struct timeval tv = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
                if (errno == EINPROGRESS || errno == EAGAIN || errno == ETIMEDOUT) puts("timeout");
                else printf("error %d\n", errno);
                return 1;
            }
            return finish(fd);
        }
        """#

    /// Compiles the probe into a directory of its own; `remove(_:)` deletes it.
    public static func build() throws -> String {
        let dir = "/tmp/vivarium-netprobe-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try source.write(toFile: dir + "/netprobe.c", atomically: true, encoding: .utf8)
        let cc = try runCommand("/usr/bin/gcc", ["-static", "-O2", "-o", dir + "/netprobe", dir + "/netprobe.c"])
        guard cc.status == 0 else {
            remove(dir + "/netprobe")
            throw LabError("gcc -static netprobe: \(cc.stderr)")
        }
        return dir + "/netprobe"
    }

    public static func remove(_ probe: String) {
        try? FileManager.default.removeItem(atPath: (probe as NSString).deletingLastPathComponent)
    }

    /// Puts the probe at /netprobe in a box's writable layer, owned by the box's root.
    public static func install(_ probe: String, upperDir: String, owner: Int64) throws {
        let target = upperDir + "/netprobe"
        try FileManager.default.copyItem(atPath: probe, toPath: target)
        guard chown(target, uid_t(owner), gid_t(owner)) == 0, chmod(target, 0o755) == 0 else {
            throw LabError("cannot hand \(target) to the box")
        }
    }
}
