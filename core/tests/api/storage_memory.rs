//! The storage conformance suite on the in-memory backend.

use hearth_core::storage::MemoryStorage;

async fn fresh() -> MemoryStorage {
    MemoryStorage::new()
}

hearth_core::storage_conformance_tests!(native, fresh);
