import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The `manifest.json` of one local image: what it is a copy of, and how far the copy got.
///
/// It is always replaced atomically (temp file, fsync, rename, fsync of the folder), so a reader sees either the
/// old or the new manifest, and `active` is written only after the data is complete and durable.
struct Manifest: Codable, Sendable, Equatable {
    static let fileName = "manifest.json"
    static let currentFormat = 1

    /// Format version of this file.
    var format: Int = Manifest.currentFormat
    var name: String
    var description: String
    /// The source path, exactly as given to `create`.
    var target: String
    /// `file` or `directory`, once known.
    var kind: String?
    /// One of ``ImageState/stringValue``: `queued`, `saving`, `active`, `error`.
    var state: String
    var error: String?
    var createdAt: Date
    var completedAt: Date?
    /// Logical size: the file size, or the sum of regular file sizes of a directory.
    var sizeBytes: Int64?
    /// Bytes the copy occupies on disk (smaller than `sizeBytes` for sparse files, shared for reflinks).
    var allocatedBytes: Int64?
    /// Hex digest; see `digestAlgorithm`.
    var sha256: String?
    /// `sha256` (of the file bytes, as `sha256sum` prints) or `snapcron-tree-v1` (see `TreeDigest`).
    var digestAlgorithm: String?
    /// `reflink`, `sparse-copy` or `tree`.
    var copyMethod: String?

    enum CodingKeys: String, CodingKey {
        case format, name, description, target, kind, state, error
        case createdAt = "created_at"
        case completedAt = "completed_at"
        case sizeBytes = "size_bytes"
        case allocatedBytes = "allocated_bytes"
        case sha256
        case digestAlgorithm = "digest_algorithm"
        case copyMethod = "copy_method"
    }

    // Written by hand so absent values appear as `null`: every manifest has the same keys.
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(format, forKey: .format)
        try container.encode(name, forKey: .name)
        try container.encode(description, forKey: .description)
        try container.encode(target, forKey: .target)
        try container.encode(kind, forKey: .kind)
        try container.encode(state, forKey: .state)
        try container.encode(error, forKey: .error)
        try container.encode(createdAt, forKey: .createdAt)
        try container.encode(completedAt, forKey: .completedAt)
        try container.encode(sizeBytes, forKey: .sizeBytes)
        try container.encode(allocatedBytes, forKey: .allocatedBytes)
        try container.encode(sha256, forKey: .sha256)
        try container.encode(digestAlgorithm, forKey: .digestAlgorithm)
        try container.encode(copyMethod, forKey: .copyMethod)
    }

    /// Reads the manifest in `folder`; `nil` when there is none.
    static func read(in folder: String) throws -> Manifest? {
        let path = folder + "/" + fileName
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch let error as CocoaError where error.code == .fileReadNoSuchFile {
            return nil
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(Manifest.self, from: data)
    }

    /// Atomically replaces the manifest in `folder` with this one.
    func write(in folder: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        var data = try encoder.encode(self)
        data.append(0x0A)

        let temporary = folder + "/.\(Manifest.fileName).tmp"
        let final = folder + "/" + Manifest.fileName
        let descriptor = try systemCall("open", temporary) {
            open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        }
        do {
            defer { closeQuietly(descriptor) }
            try data.withUnsafeBytes { try writeAll(descriptor, $0, path: temporary) }
            try systemCall("fsync", temporary) { fsync(descriptor) }
        } catch {
            _ = unlink(temporary)
            throw error
        }
        try systemCall("rename", final) { rename(temporary, final) }
        try fsyncDirectory(folder)
    }
}
