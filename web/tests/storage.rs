//! The IndexedDB backend in headless Chromium: the shared conformance suite, persistence,
//! schema upgrades and the failure modes a browser can throw at a database.
//!
//! `CHROMEDRIVER=/usr/bin/chromedriver cargo test -p hearth-web --target wasm32-unknown-unknown`

#![cfg(target_arch = "wasm32")]

use std::cell::Cell;

use futures::future::{Either, select};
use gloo_timers::future::TimeoutFuture;
use hearth_core::storage::{Batch, Direction, KeyRange, Storage, StorageError, TREES};
use hearth_web::{IndexedDbStorage, idb_version, map_dom_exception};
use indexed_db_futures::database::Database;
use indexed_db_futures::prelude::*;
use indexed_db_futures::transaction::TransactionMode;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

thread_local! {
    static NEXT_DB: Cell<u32> = const { Cell::new(0) };
}

/// A database name no other test (or earlier run in the same profile) uses.
fn unique_name(label: &str) -> String {
    let n = NEXT_DB.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    format!("hearth-test-{label}-{}-{n}", js_sys::Date::now())
}

async fn fresh_db() -> IndexedDbStorage {
    IndexedDbStorage::open(&unique_name("conformance"))
        .await
        .expect("open a fresh database")
}

hearth_core::storage_conformance_tests!(wasm, fresh_db);

async fn put(s: &IndexedDbStorage, tree: &'static str, k: &[u8], v: &[u8]) {
    let mut b = Batch::new();
    b.put(tree, k, v);
    s.write(b).await.expect("write");
}

/// Opens `name` at `version` the way a page of another release would, with `stores` only.
async fn open_raw(name: &str, version: u32, stores: &'static [&'static str]) -> Database {
    Database::open(name.to_owned())
        .with_version(version)
        .with_on_upgrade_needed(move |_, db| {
            for store in stores {
                db.create_object_store(*store).build()?;
            }
            Ok(())
        })
        .await
        .expect("raw open")
}

#[wasm_bindgen_test]
async fn reopened_database_keeps_acknowledged_writes() {
    let name = unique_name("persist");
    let s = IndexedDbStorage::open(&name).await.expect("open");
    let mut b = Batch::new();
    b.put("meta", b"signing_key_seed".to_vec(), vec![7u8; 32]);
    b.put("test", b"k\x00\xff".to_vec(), b"v".to_vec());
    s.write(b).await.expect("write");
    let mut b = Batch::new();
    b.delete("test", b"k\x00\xff".to_vec());
    b.put("test", b"k2".to_vec(), b"v2".to_vec());
    s.write(b).await.expect("write");
    s.close();
    drop(s);

    let s = IndexedDbStorage::open(&name).await.expect("reopen");
    assert_eq!(
        s.get("meta", b"signing_key_seed").await.expect("get"),
        Some(vec![7u8; 32])
    );
    assert_eq!(s.get("test", b"k\x00\xff").await.expect("get"), None);
    let all = s
        .scan("test", KeyRange::all(), Direction::Forward, 10)
        .await
        .expect("scan");
    assert_eq!(all, vec![(b"k2".to_vec(), b"v2".to_vec())]);
}

#[wasm_bindgen_test]
async fn older_layout_is_upgraded_in_place_keeping_records() {
    let name = unique_name("upgrade");
    // A database from a release that only knew the "meta" tree, holding a record.
    let old = open_raw(&name, 1, &["meta"]).await;
    let tx = old
        .transaction("meta")
        .with_mode(TransactionMode::Readwrite)
        .build()
        .expect("tx");
    let store = tx.object_store("meta").expect("store");
    store
        .put(JsValue::from(js_sys::Uint8Array::from(&b"seed"[..])))
        .with_key(JsValue::from(js_sys::Uint8Array::from(&b"old_key"[..])))
        .primitive()
        .expect("put")
        .await
        .expect("put");
    drop(store);
    tx.commit().await.expect("commit");
    old.close();

    let s = IndexedDbStorage::open(&name)
        .await
        .expect("upgrade on open");
    assert_eq!(
        s.get("meta", b"old_key").await.expect("get"),
        Some(b"seed".to_vec())
    );
    // Every tree of this build exists now and takes writes.
    for tree in TREES {
        assert_eq!(
            s.get(tree, b"nothing").await.expect("every tree exists"),
            None
        );
    }
    put(&s, "users", b"@a:x", b"{}").await;
}

#[wasm_bindgen_test]
async fn database_from_newer_release_is_unavailable_and_untouched() {
    let name = unique_name("newer");
    let newer = IndexedDbStorage::open_at(&name, idb_version() + 1000)
        .await
        .expect("open as newer release");
    put(&newer, "test", b"k", b"from the future").await;
    newer.close();
    drop(newer);

    let err = IndexedDbStorage::open(&name)
        .await
        .expect_err("an older release must not open a newer database");
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");

    let newer = IndexedDbStorage::open_at(&name, idb_version() + 1000)
        .await
        .expect("reopen as newer");
    assert_eq!(
        newer.get("test", b"k").await.expect("get"),
        Some(b"from the future".to_vec())
    );
}

#[wasm_bindgen_test]
async fn open_blocked_by_stale_connection_is_unavailable_then_recovers() {
    let name = unique_name("blocked");
    // An old tab's connection that never closes on versionchange.
    let stale = open_raw(&name, 1, &["meta"]).await;
    let started = js_sys::Date::now();
    let err = IndexedDbStorage::open(&name)
        .await
        .expect_err("a blocked upgrade must not hang");
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    assert!(
        js_sys::Date::now() - started < 5_000.0,
        "gave up in bounded time"
    );

    // Once the old tab goes away the next attempt succeeds: the abandoned open was closed
    // when it finally completed instead of holding the database.
    stale.close();
    let s = IndexedDbStorage::open(&name)
        .await
        .expect("open after the stale tab closed");
    put(&s, "test", b"k", b"v").await;
}

#[wasm_bindgen_test]
async fn connection_steps_aside_for_an_upgrade_elsewhere() {
    let name = unique_name("versionchange");
    let s = IndexedDbStorage::open(&name).await.expect("open");
    put(&s, "test", b"k", b"v").await;

    // A newer release opens the same database at a higher version: it must not be blocked.
    let upgrade = Database::open(name.clone()).with_version(idb_version() + 1);
    let opened = match select(Box::pin(upgrade.into_future()), TimeoutFuture::new(3_000)).await {
        Either::Left((db, _)) => db.expect("newer release opens"),
        Either::Right(_) => panic!("the upgrade was blocked by our open connection"),
    };
    opened.close();

    let err = s
        .get("test", b"k")
        .await
        .expect_err("the stepped-aside connection is unusable");
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    let err = s
        .write(Batch::new_with_put())
        .await
        .expect_err("writes too");
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    assert_eq!(s.last_error().map(|e| e.kind), Some("unavailable"));
}

#[wasm_bindgen_test]
async fn closed_storage_reports_unavailable() {
    let s = fresh_db().await;
    s.close();
    let err = s.get("test", b"k").await.expect_err("closed");
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    let err = s
        .scan("test", KeyRange::all(), Direction::Backward, 5)
        .await
        .expect_err("closed");
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
}

#[wasm_bindgen_test]
fn quota_exceeded_exception_maps_to_quota_error() {
    let dom =
        web_sys::DomException::new_with_message_and_name("disk is full", "QuotaExceededError")
            .expect("construct DOMException");
    assert!(
        matches!(map_dom_exception(&dom), StorageError::QuotaExceeded(m) if m == "disk is full")
    );
    let err = hearth_core::Error::from(StorageError::QuotaExceeded("disk is full".into()));
    assert_eq!(err.status.as_u16(), 507);
    assert_eq!(err.errcode, "M_RESOURCE_LIMIT_EXCEEDED");

    let dom = web_sys::DomException::new_with_message_and_name("gone", "InvalidStateError")
        .expect("construct");
    assert!(matches!(
        map_dom_exception(&dom),
        StorageError::Unavailable(_)
    ));
    let dom =
        web_sys::DomException::new_with_message_and_name("io", "UnknownError").expect("construct");
    assert!(matches!(map_dom_exception(&dom), StorageError::Backend(_)));
}

#[wasm_bindgen_test]
async fn count_and_size_estimate_follow_the_data() {
    let s = fresh_db().await;
    assert_eq!(s.count("users").await.expect("count"), 0);
    let mut b = Batch::new();
    for i in 0..25u8 {
        b.put("users", vec![b'u', i], vec![i; 40_000]);
    }
    s.write(b).await.expect("write");
    assert_eq!(s.count("users").await.expect("count"), 25);
    assert!(s.size_estimate().await.expect("estimate") > 0);
    assert!(matches!(
        s.count("no_such_tree").await,
        Err(StorageError::UnknownTree(_))
    ));
}

#[wasm_bindgen_test]
async fn empty_key_and_empty_batch_are_fine() {
    let s = fresh_db().await;
    s.write(Batch::new())
        .await
        .expect("an empty batch is a no-op");
    put(&s, "test", b"", b"empty key").await;
    put(&s, "test", b"\x00", b"zero").await;
    assert_eq!(
        s.get("test", b"").await.expect("get"),
        Some(b"empty key".to_vec())
    );
    let all = s
        .scan("test", KeyRange::all(), Direction::Backward, 10)
        .await
        .expect("scan");
    assert_eq!(
        all.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        vec![b"\x00".to_vec(), Vec::new()]
    );
}

trait BatchExt {
    fn new_with_put() -> Batch;
}

impl BatchExt for Batch {
    fn new_with_put() -> Batch {
        let mut b = Batch::new();
        b.put("test", b"k".to_vec(), b"v".to_vec());
        b
    }
}

#[wasm_bindgen_test]
async fn an_issued_write_is_seen_before_it_is_durable() {
    let s = fresh_db().await;
    let mut b = Batch::new();
    b.put("test", b"a", b"1");
    b.put("test", b"b", b"2");
    let durable = s.begin_write(b).await.expect("issue");
    // Point reads come from the cache, scans from IndexedDB (which runs them after the write).
    assert_eq!(s.get("test", b"a").await.expect("get"), Some(b"1".to_vec()));
    let all = s
        .scan("test", KeyRange::all(), Direction::Forward, 10)
        .await
        .expect("scan");
    assert_eq!(all.len(), 2);
    durable.await.expect("durable");
    // The next write waits for nothing, and the two land in order.
    let mut b = Batch::new();
    b.put("test", b"a", b"3");
    let first = s.begin_write(b).await.expect("issue");
    let mut b = Batch::new();
    b.put("test", b"a", b"4");
    let second = s
        .begin_write(b)
        .await
        .expect("issued once the first committed");
    first.await.expect("first");
    second.await.expect("second");
    assert_eq!(s.get("test", b"a").await.expect("get"), Some(b"4".to_vec()));
}

#[wasm_bindgen_test]
async fn a_write_prepared_on_a_failed_one_is_never_issued() {
    let s = fresh_db().await;
    put(&s, "test", b"k", b"v").await;
    let failing = s
        .begin_write_that_aborts("test", b"k")
        .await
        .expect("issued");
    let mut b = Batch::new();
    b.put("test", b"after", b"built on the failed write");
    let err = s
        .begin_write(b)
        .await
        .err()
        .expect("refused: the write ahead of it failed");
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");
    assert!(failing.await.is_err(), "the aborted write reports it");
    assert_eq!(s.get("test", b"after").await.expect("get"), None);
    assert_eq!(s.get("test", b"k").await.expect("get"), Some(b"v".to_vec()));
    // Once the failure has been reported, writes go through again.
    put(&s, "test", b"later", b"fine").await;
    assert_eq!(
        s.get("test", b"later").await.expect("get"),
        Some(b"fine".to_vec())
    );
}
