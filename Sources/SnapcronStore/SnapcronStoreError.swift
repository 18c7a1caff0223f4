public import SnapcronCore

/// The SQLite store's errors: the core's ``StateStoreError``, under the name this module has always used.
public typealias SnapcronStoreError = StateStoreError
