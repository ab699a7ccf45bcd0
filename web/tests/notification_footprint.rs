//! What notifications cost in IndexedDB per message and room member, in headless Chromium:
//! the stored key + value bytes (read back through the backend, so the same figure as the
//! native `core/tests/api/notification_footprint.rs`), the origin's usage as
//! `navigator.storage.estimate()` reports it, and the time per send.
//!
//! The test run keeps within the runner's 20 s: rooms of 2 and 50 members. The full
//! measurement (2, 50 and 500 members) is built in with an environment variable at compile
//! time and needs a longer runner timeout:
//!
//! ```text
//! HEARTH_FOOTPRINT_FULL=1 WASM_BINDGEN_TEST_TIMEOUT=3600 CHROMEDRIVER=/usr/bin/chromedriver \
//!     cargo test -p hearth-web --target wasm32-unknown-unknown --release \
//!     --test notification_footprint
//! ```

#![cfg(target_arch = "wasm32")]

use std::rc::Rc;

use hearth_core::testing::footprint::{BusyRoom, Footprint};
use hearth_core::{Config, Homeserver};
use hearth_web::{BrowserWorld, IndexedDbStorage};
use js_sys::{Promise, Reflect};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

const TARGET_BYTES_PER_EVENT_PER_MEMBER: f64 = 100.0;

/// `(members, messages)` of each measured room.
fn sizes() -> &'static [(usize, usize)] {
    if option_env!("HEARTH_FOOTPRINT_FULL").is_some() {
        &[(2, 2000), (50, 2000), (500, 200)]
    } else {
        &[(2, 200), (50, 20)]
    }
}

/// The origin's storage usage in bytes, as the browser estimates it.
async fn usage() -> f64 {
    let estimate = (|| {
        let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).ok()?;
        let storage = Reflect::get(&navigator, &"storage".into()).ok()?;
        let f: js_sys::Function = Reflect::get(&storage, &"estimate".into()).ok()?.into();
        f.call0(&storage).ok().map(Promise::from)
    })();
    let Some(estimate) = estimate else {
        return f64::NAN;
    };
    match JsFuture::from(estimate).await {
        Ok(e) => Reflect::get(&e, &"usage".into())
            .ok()
            .and_then(|u| u.as_f64())
            .unwrap_or(f64::NAN),
        Err(_) => f64::NAN,
    }
}

#[wasm_bindgen_test]
async fn notifications_cost_little_per_member_in_indexeddb() {
    let mut over = Vec::new();
    for &(members, messages) in sizes() {
        let name = format!("hearth-footprint-{members}-{}", js_sys::Date::now() as u64);
        let store = Rc::new(IndexedDbStorage::open(&name).await.expect("open"));
        let config = Config {
            password_hash_memory_kib: 64,
            ..Config::default()
        };
        let hs = Homeserver::new(store.clone(), Rc::new(BrowserWorld), config)
            .await
            .expect("boot");
        let mut room = BusyRoom::create(&hs, "fp", members).await;
        room.send(1).await;
        let before = Footprint::of(&*store).await.expect("scan");
        let usage_before = usage().await;
        let started = js_sys::Date::now();
        room.send(messages).await;
        let ms_per_send = (js_sys::Date::now() - started) / messages as f64;
        let usage_after = usage().await;
        let added = Footprint::of(&*store).await.expect("scan").since(&before);
        let per = (members * messages) as f64;
        let notifications = added.tree("notifications").bytes as f64 / per;
        console_log!(
            "IndexedDB, {members} members, {messages} messages: notifications {notifications:.1} B, \
             all trees {:.1} B per event per member ({} notification records); \
             storage.estimate() usage {:.1} B per event per member; {ms_per_send:.2} ms per send",
            added.total().bytes as f64 / per,
            added.tree("notifications").records,
            (usage_after - usage_before) / per,
        );
        store.close();
        drop(hs);
        // Leave the profile as small as we found it for the next room's estimate.
        delete_database(&name);
        if notifications >= TARGET_BYTES_PER_EVENT_PER_MEMBER {
            over.push(format!("{notifications:.1} B in a room of {members}"));
        }
    }
    assert!(
        over.is_empty(),
        "notifications over {TARGET_BYTES_PER_EVENT_PER_MEMBER} bytes per event per member: {over:?}"
    );
}

/// Starts deleting the database `name`; nothing waits for it.
fn delete_database(name: &str) {
    let Ok(factory) = Reflect::get(&js_sys::global(), &"indexedDB".into()) else {
        return;
    };
    if let Ok(delete) = Reflect::get(&factory, &"deleteDatabase".into()) {
        let delete: js_sys::Function = delete.into();
        let _ = delete.call1(&factory, &JsValue::from_str(name));
    }
}
