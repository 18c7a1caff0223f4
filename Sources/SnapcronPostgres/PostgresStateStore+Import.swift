import Foundation
import PostgresNIO
import SnapcronCore

extension PostgresStateStore {
    /// Fills an empty store with `export` (`snapcronctl store copy`): runs keep their ids, images their runs,
    /// hook results their order, the store the installation id. One transaction: all of it or nothing. Unfinished
    /// runs get no owner, so the first node to start takes them over. Refuses a store that has runs, images or
    /// jobs already.
    public func importAll(_ export: StoreExport) async throws {
        try await transaction { [self] transaction in
            let counts = try await transaction.rows(
                """
                SELECT (SELECT count(*) FROM runs) + (SELECT count(*) FROM images) + (SELECT count(*) FROM jobs),
                       (SELECT count(*) FROM nodes)
                """
            ).first
            let (used, nodes): (Int64, Int64) = try counts?.decode((Int64, Int64).self) ?? (0, 0)
            guard used == 0 else {
                throw PostgresStoreError(
                    .conflict, "the store \(location) is not empty (\(used) runs, images and jobs): copy into a new one")
            }
            guard nodes == 0 else {
                throw PostgresStoreError(
                    .conflict, "nodes have joined the store \(location) already: copy before starting any node")
            }
            if !export.installationID.isEmpty {
                try await transaction.execute("UPDATE installation SET id = \(export.installationID)")
            }
            for batch in Self.batches(export.runs) {
                var insert = BulkInsert(table: "runs", overridingIdentity: true)
                try insert.add("id", "int8", batch.map(\.id))
                try insert.add("job", "text", batch.map(\.job))
                try insert.add("scheduled_at", "int8", batch.map(\.scheduledAt.epochSeconds))
                try insert.add("trigger", "text", batch.map(\.trigger.rawValue))
                try insert.add("state", "text", batch.map(\.state.rawValue))
                try insert.add("attempts", "int4", batch.map { Int32($0.attempts) })
                try insert.add("image_name", "text", batch.map(\.imageName), placeholder: "")
                try insert.add("image_id", "text", batch.map(\.imageID), placeholder: "")
                try insert.add("backend", "text", batch.map(\.backend), placeholder: "")
                try insert.add("target", "text", batch.map(\.target), placeholder: "")
                try insert.add("claimed_at", "int8", batch.map(\.claimedAt.epochSeconds))
                try insert.add("started_at", "int8", batch.map { $0.startedAt?.epochSeconds }, placeholder: 0)
                try insert.add("finished_at", "int8", batch.map { $0.finishedAt?.epochSeconds }, placeholder: 0)
                try insert.add("next_poll_at", "int8", batch.map { $0.nextPollAt?.epochSeconds }, placeholder: 0)
                try insert.add("error", "text", batch.map(\.error), placeholder: "")
                try insert.add("repeat_count", "int4", batch.map { Int32($0.repeatCount) })
                try insert.add("repeated_until", "int8", batch.map { $0.repeatedUntil?.epochSeconds }, placeholder: 0)
                try await transaction.execute(insert.query)
            }
            try await transaction.execute(
                """
                SELECT setval(pg_get_serial_sequence('runs', 'id'), GREATEST((SELECT max(id) FROM runs), 1),
                              (SELECT count(*) > 0 FROM runs))
                """)
            for batch in Self.batches(export.images) {
                let records = batch.map(\.record)
                var insert = BulkInsert(table: "images")
                try insert.add("backend", "text", records.map(\.backend))
                try insert.add("id", "text", records.map(\.id))
                try insert.add("job", "text", records.map(\.job))
                try insert.add("target", "text", records.map(\.target))
                try insert.add("name", "text", records.map(\.name))
                try insert.add("description", "text", records.map(\.description), placeholder: "")
                try insert.add("created_at", "int8", records.map(\.createdAt.epochSeconds))
                try insert.add("updated_at", "int8", batch.map(\.updatedAt.epochSeconds))
                try insert.add("state", "text", records.map(\.state.rawValue))
                try insert.add("size_bytes", "int8", records.map(\.sizeBytes), placeholder: 0)
                try insert.add("pinned", "bool", records.map(\.pinned))
                try insert.add("deleted_at", "int8", records.map { $0.deletedAt?.epochSeconds }, placeholder: 0)
                try insert.add("run_id", "int8", records.map(\.runID), placeholder: 0)
                try insert.add("keep_reason", "text", records.map(\.keepReason), placeholder: "")
                try insert.add("delete_reason", "text", records.map(\.deleteReason), placeholder: "")
                try await transaction.execute(insert.query)
            }
            for batch in Self.batches(export.jobs) {
                var insert = BulkInsert(table: "jobs")
                try insert.add("name", "text", batch.map(\.name))
                try insert.add("paused", "bool", batch.map(\.paused))
                try insert.add("last_scheduled_at", "int8", batch.map { $0.lastScheduledAt?.epochSeconds }, placeholder: 0)
                try insert.add("updated_at", "int8", batch.map(\.updatedAt.epochSeconds))
                try await transaction.execute(insert.query)
            }
            for batch in Self.batches(export.hookResults) {
                var insert = BulkInsert(table: "hook_results")
                try insert.add("run_id", "int8", batch.map(\.runID))
                try insert.add("phase", "text", batch.map(\.phase.rawValue))
                try insert.add("hook_set", "text", batch.map(\.hookSet))
                try insert.add("result", "text", batch.map(\.result))
                try insert.add("exit_status", "int4", batch.map(\.exitStatus), placeholder: 0)
                try insert.add("duration_ms", "int8", batch.map { Int64($0.durationMs) })
                try insert.add("finished_at", "int8", batch.map(\.finishedAt.epochSeconds))
                try await transaction.execute(insert.query)
            }
        }
    }

    private static func batches<Element>(_ elements: [Element]) -> [ArraySlice<Element>] {
        stride(from: 0, to: elements.count, by: 1000).map { elements[$0..<min($0 + 1000, elements.count)] }
    }
}

/// One `INSERT ... SELECT ... FROM unnest(arrays)` for a batch of rows, in the arrays' order. PostgresNIO binds
/// no array of optionals: a nullable column goes as its values (a placeholder where nil) and a flag array.
private struct BulkInsert {
    let table: String
    var overridingIdentity = false
    private var columns: [String] = []
    private var selected: [String] = []
    private var unnested: [String] = []
    private var aliases: [String] = []
    private var bindings = PostgresBindings()

    init(table: String, overridingIdentity: Bool = false) {
        self.table = table
        self.overridingIdentity = overridingIdentity
    }

    mutating func add<Value: PostgresArrayEncodable>(_ name: String, _ type: String, _ values: [Value]) throws {
        try bind(values, type: type, alias: name)
        columns.append(name)
        selected.append("v.\(name)")
    }

    mutating func add<Value: PostgresArrayEncodable>(
        _ name: String, _ type: String, _ values: [Value?], placeholder: Value
    ) throws {
        try bind(values.map { $0 ?? placeholder }, type: type, alias: name)
        try bind(values.map { $0 != nil }, type: "bool", alias: "has_\(name)")
        columns.append(name)
        selected.append("CASE WHEN v.has_\(name) THEN v.\(name) END")
    }

    private mutating func bind<Array: PostgresThrowingDynamicTypeEncodable>(_ values: Array, type: String, alias: String)
        throws
    {
        try bindings.append(values)
        unnested.append("$\(unnested.count + 1)::\(type)[]")
        aliases.append(alias)
    }

    var query: PostgresQuery {
        PostgresQuery(
            unsafeSQL: """
                INSERT INTO \(table) (\(columns.joined(separator: ", ")))
                \(overridingIdentity ? "OVERRIDING SYSTEM VALUE" : "")
                SELECT \(selected.joined(separator: ", "))
                FROM unnest(\(unnested.joined(separator: ", ")))
                    WITH ORDINALITY AS v (\(aliases.joined(separator: ", ")), position)
                ORDER BY v.position
                """, binds: bindings)
    }
}
