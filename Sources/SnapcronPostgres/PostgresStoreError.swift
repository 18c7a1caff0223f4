public import SnapcronCore

/// The PostgreSQL store's errors: the core's ``StateStoreError``, the same type as the SQLite store's.
public typealias PostgresStoreError = StateStoreError
