#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Standard output or standard error, written unbuffered and without trapping when the reader is gone.
///
/// Foundation's `FileHandle.write(_:)` traps on a write error, and a closed pipe is an ordinary event here: the
/// demo that started a shop service killed with -9, `switchboard watch | head` after ten lines, a log collector
/// restarted. A server must not crash on a log line, so a failed write reports `false` and the caller decides.
public enum StandardStream: Sendable {
    /// File descriptor 1.
    case output
    /// File descriptor 2.
    case error

    /// SIGPIPE would end the process before the write could report the closed pipe; SwiftNIO ignores it too,
    /// but only once it opens its first socket.
    private static let brokenPipesReported: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

    /// Writes all of `bytes` at once (lines reach a pipe as they happen, not when a buffer fills); `false` when the
    /// stream is closed or failed, with `errno` saying why (`EPIPE`: no one reads any more).
    @discardableResult
    public func write(_ bytes: some Sequence<UInt8>) -> Bool {
        Self.brokenPipesReported
        let descriptor: Int32 = self == .output ? 1 : 2
        let buffer = Array(bytes)
        return buffer.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = systemWrite(descriptor, raw.baseAddress! + offset, raw.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += written
            }
            return true
        }
    }

    /// Writes `text` as UTF-8; `false` when the stream is closed or failed.
    @discardableResult
    public func write(_ text: String) -> Bool {
        write(text.utf8)
    }
}

private func systemWrite(_ descriptor: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    #if canImport(Glibc)
    Glibc.write(descriptor, bytes, count)
    #elseif canImport(Musl)
    Musl.write(descriptor, bytes, count)
    #else
    Darwin.write(descriptor, bytes, count)
    #endif
}
