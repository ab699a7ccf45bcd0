//! The conformance suite again with `getAllRecords` turned off: the path browsers without it
//! (Firefox, Safari today) take, where backward scans step a cursor and forward scans pair
//! `getAllKeys` with `getAll`.

#![cfg(target_arch = "wasm32")]

use std::cell::Cell;

use hearth_web::IndexedDbStorage;
use wasm_bindgen_test::wasm_bindgen_test_configure;

wasm_bindgen_test_configure!(run_in_browser);

thread_local! {
    static NEXT_DB: Cell<u32> = const { Cell::new(0) };
}

async fn fresh_db() -> IndexedDbStorage {
    let n = NEXT_DB.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let name = format!("hearth-test-cursor-{}-{n}", js_sys::Date::now());
    let store = IndexedDbStorage::open(&name)
        .await
        .expect("open a fresh database");
    store.set_bulk_records(false);
    store
}

hearth_core::storage_conformance_tests!(wasm, fresh_db);
