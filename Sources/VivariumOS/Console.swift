import CVivariumOS
import Glibc
import VivariumCore

/// The socket an OCI runtime sends a new terminal's master to (`--console-socket`): a listening unix
/// socket, closed and unlinked when the value goes.
public struct ConsoleSocket: ~Copyable, Sendable {
    public let path: String
    let fd: Int32

    public init(path: String) throws {
        let fd = vv_listen_unix(path)
        guard fd >= 0 else { throw posixError("console socket", -fd) }
        self.path = path
        self.fd = fd
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// The master the runtime sends, or nil when `sender` exits first (it failed; its stderr says why).
    public func receiveMaster(from sender: ChildProcess) async -> Int32? {
        let listener = fd
        return await withTaskGroup(of: Int32?.self) { tasks in
            tasks.addTask {
                while !Task.isCancelled {
                    await Reaper.shared.readable(listener)
                    let c = vv_accept(listener)
                    if c == -EAGAIN || c == -EINTR { continue }
                    guard c >= 0 else { return nil }
                    defer { close(c) }
                    let master = vv_recv_fd(c)
                    return master >= 0 ? master : nil
                }
                return nil
            }
            tasks.addTask {
                _ = await sender.wait()
                return nil
            }
            let first = await tasks.next() ?? nil
            tasks.cancelAll()
            // The sender may have sent the master and exited at once: a master already queued wins.
            if first == nil, !Task.isCancelled {
                let c = vv_accept(listener)
                if c >= 0 {
                    defer { close(c) }
                    let master = vv_recv_fd(c)
                    if master >= 0 { return master }
                }
            }
            return first
        }
    }
}

/// Sets a terminal's window size (TIOCSWINSZ on its master); the foreground process gets SIGWINCH.
public func setWindowSize(_ fd: Int32, rows: UInt16, columns: UInt16) throws {
    let rc = vv_set_winsize(fd, rows, columns)
    guard rc == 0 else { throw posixError("resize the terminal", -rc) }
}

/// A terminal's window size, when `fd` is one.
public func windowSize(_ fd: Int32) -> (rows: UInt16, columns: UInt16)? {
    var rows: UInt16 = 0
    var columns: UInt16 = 0
    guard vv_get_winsize(fd, &rows, &columns) == 0, rows > 0, columns > 0 else { return nil }
    return (rows, columns)
}

/// Puts a terminal in raw mode (no echo, no line editing, no signals from keys) until `restore`.
public struct RawTerminal: Sendable {
    let fd: Int32
    let saved: termios

    public init?(_ fd: Int32) {
        var t = termios()
        guard isatty(fd) == 1, tcgetattr(fd, &t) == 0 else { return nil }
        var raw = t
        cfmakeraw(&raw)
        guard tcsetattr(fd, TCSANOW, &raw) == 0 else { return nil }
        self.fd = fd
        saved = t
    }

    public func restore() {
        var t = saved
        tcsetattr(fd, TCSANOW, &t)
    }
}
