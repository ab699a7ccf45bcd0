//! [`HearthServer`]: the JavaScript face of the homeserver, used by `www/server-worker.js`.
//!
//! Requests and responses cross the boundary as plain values (method, URL, header pairs,
//! `Uint8Array` bodies) so the worker can move them over a `MessagePort` without re-encoding.

use std::rc::Rc;
use std::sync::Once;

use hearth_core::storage::{Storage, StorageError};
use hearth_core::{Config, Homeserver, StartError};
use http::header::{HOST, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use js_sys::{Array, Object, Reflect, Uint8Array};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use wasm_bindgen::prelude::*;

use crate::indexeddb::{IndexedDbStorage, OpStats, StorageFailure};
use crate::relay::RelayTransport;
use crate::world::BrowserWorld;

struct Inner {
    hs: Homeserver,
    store: Rc<IndexedDbStorage>,
    relay: RelayTransport,
    boot_ms: f64,
}

/// A running homeserver over one IndexedDB database.
#[wasm_bindgen]
pub struct HearthServer {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl HearthServer {
    /// Boots the server over the IndexedDB database `db_name`: creates or upgrades the
    /// database, then loads (first boot: generates and stores) the signing key.
    ///
    /// Rejects with an `Error` whose `kind` is `quota`, `unavailable` or `backend`.
    pub async fn start(db_name: String) -> Result<HearthServer, JsValue> {
        init_once();
        let began = js_sys::Date::now();
        let store = Rc::new(
            IndexedDbStorage::open(&db_name)
                .await
                .map_err(storage_js_error)?,
        );
        // Other servers are reached through the relay once `connectRelay` is called; until
        // then every request to them fails and the outbound queue waits.
        let relay = RelayTransport::default();
        let hs = Homeserver::with_transport(
            store.clone(),
            Rc::new(BrowserWorld),
            Rc::new(relay.clone()),
            Config::default(),
        )
        .await
        .map_err(|e| match e {
            StartError::Storage(e) => storage_js_error(e),
            other => tagged_error("backend", &other.to_string()),
        })?;
        let boot_ms = js_sys::Date::now() - began;
        tracing::info!(server_name = %hs.server_name(), boot_ms, "hearth-web started");
        wasm_bindgen_futures::spawn_local(hearth_core::federation::outbox::run(hs.clone()));
        wasm_bindgen_futures::spawn_local(hearth_core::room::indexer::run(hs.clone()));
        Ok(HearthServer {
            inner: Rc::new(Inner {
                hs,
                store,
                relay,
                boot_ms,
            }),
        })
    }

    /// Federates through the Hearth relay at `url` (the page's origin: the relay serves the
    /// page), keeping the socket open for as long as the worker lives.
    #[wasm_bindgen(js_name = connectRelay)]
    pub fn connect_relay(&self, url: String) {
        crate::relay::connect(self.inner.hs.clone(), self.inner.relay.clone(), url);
    }

    /// The server's name: the lowercase hex of its ed25519 public key.
    #[wasm_bindgen(js_name = serverName)]
    pub fn server_name(&self) -> String {
        self.inner.hs.server_name().to_string()
    }

    /// Serves one request. `headers` is an array of `[name, value]` pairs (as
    /// `[...request.headers]` gives). Resolves to `{status, headers, body}`; never rejects for
    /// anything the request contains: bad input becomes a Matrix error response.
    pub fn handle(
        &self,
        method: String,
        url: String,
        headers: Array,
        body: Uint8Array,
    ) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let response = match build_request(&method, &url, &headers, body.to_vec()) {
                Ok(request) => inner.hs.handle(request).await,
                Err(e) => {
                    hearth_core::Error::new(http::StatusCode::BAD_REQUEST, "M_UNRECOGNIZED", e)
                        .into_response()
                }
            };
            response_to_js(response)
        })
    }

    /// `{serverName, version, storageBytes, users, rooms, relay, relayUrl, peers: [{server, rooms,
    /// queued, failures, retry_at}], bootMs, storageError}`.
    pub fn status(&self) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let status = Object::new();
            set(
                &status,
                "serverName",
                &inner.hs.server_name().as_str().into(),
            )?;
            set(&status, "version", &hearth_core::VERSION.into())?;
            let bytes = inner
                .store
                .size_estimate()
                .await
                .map_err(storage_js_error)?;
            set(&status, "storageBytes", &(bytes as f64).into())?;
            let users = inner.store.count("users").await.map_err(storage_js_error)?;
            set(&status, "users", &(users as f64).into())?;
            let rooms = inner.store.count("rooms").await.map_err(storage_js_error)?;
            set(&status, "rooms", &(rooms as f64).into())?;
            set(&status, "relay", &inner.relay.status().into())?;
            set(
                &status,
                "relayUrl",
                &inner.relay.url().map_or(JsValue::NULL, JsValue::from),
            )?;
            let peers = hearth_core::federation::peers::list(&inner.hs)
                .await
                .map_err(|e| JsValue::from_str(&e.to_string()))?;
            let peers =
                serde_json::to_string(&peers).map_err(|e| JsValue::from_str(&e.to_string()))?;
            set(&status, "peers", &js_sys::JSON::parse(&peers)?)?;
            set(&status, "bootMs", &inner.boot_ms.into())?;
            let error = inner
                .store
                .last_error()
                .map_or(JsValue::NULL, failure_to_js);
            set(&status, "storageError", &error)?;
            set(
                &status,
                "storageOps",
                &op_stats_to_js(inner.store.op_stats())?,
            )?;
            Ok(status.into())
        })
    }

    /// The storage failure seen since the last call, if any (`{kind, message}`), so the
    /// worker can tell the pages as soon as it happens.
    #[wasm_bindgen(js_name = takeStorageError)]
    pub fn take_storage_error(&self) -> JsValue {
        self.inner
            .store
            .take_last_error()
            .map_or(JsValue::UNDEFINED, failure_to_js)
    }

    /// Closes the database connection. Requests afterwards get `503` (retryable).
    pub fn close(&self) {
        self.inner.store.close();
    }
}

/// Which logs reach the console (see `hearth_core::logging`): a filter on the subscriber, so
/// that a disabled span or event costs nothing at all rather than a console call.
fn log_levels() -> Targets {
    hearth_core::logging::DEFAULT_DIRECTIVES
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::WARN))
}

fn init_once() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        console_error_panic_hook::set_once();
        let config = tracing_wasm::WASMLayerConfigBuilder::new()
            .set_max_level(tracing::Level::INFO)
            .set_report_logs_in_timings(false)
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_wasm::WASMLayer::new(config))
            .with(log_levels());
        // Someone (an embedder) may have installed a subscriber first; logs then go there.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// Turns what the service worker saw into the request a server would have received:
/// origin-form URI, and the `Host` the browser never exposes to scripts.
fn build_request(
    method: &str,
    url: &str,
    headers: &Array,
    body: Vec<u8>,
) -> Result<Request<Vec<u8>>, String> {
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| format!("invalid method {method:?}"))?;
    let uri: Uri = url.parse().map_err(|_| format!("invalid URL {url:?}"))?;
    let mut builder = Request::builder().method(method);
    let mut has_host = false;
    for pair in headers.iter() {
        let pair = Array::from(&pair);
        let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) else {
            return Err("headers must be [name, value] string pairs".into());
        };
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("invalid value for header {name}"))?;
        has_host |= name == HOST;
        builder = builder.header(name, value);
    }
    if !has_host && let Some(authority) = uri.authority() {
        builder = builder.header(HOST, authority.as_str());
    }
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    builder
        .uri(path_and_query)
        .body(body)
        .map_err(|e| format!("invalid request: {e}"))
}

fn response_to_js(response: http::Response<Vec<u8>>) -> Result<JsValue, JsValue> {
    let out = Object::new();
    set(&out, "status", &response.status().as_u16().into())?;
    let headers = Array::new();
    for (name, value) in response.headers() {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers.push(&Array::of2(&name.as_str().into(), &value.as_ref().into()));
    }
    set(&out, "headers", &headers)?;
    set(&out, "body", &Uint8Array::from(response.body().as_slice()))?;
    Ok(out.into())
}

fn set(target: &Object, key: &str, value: &JsValue) -> Result<(), JsValue> {
    Reflect::set(target, &key.into(), value).map(|_| ())
}

fn op_stats_to_js(stats: OpStats) -> Result<JsValue, JsValue> {
    let out = Object::new();
    for (name, counter) in [
        ("get", stats.gets),
        ("getMany", stats.get_manys),
        ("scan", stats.scans),
        ("write", stats.writes),
    ] {
        let entry = Object::new();
        set(&entry, "count", &(counter.count as f64).into())?;
        set(&entry, "totalMs", &counter.total_ms.into())?;
        set(&out, name, &entry)?;
    }
    set(&out, "cacheHits", &(stats.cache_hits as f64).into())?;
    set(&out, "cacheMisses", &(stats.cache_misses as f64).into())?;
    let by_tree = Object::new();
    for (tree, n) in &stats.cache_misses_by_tree {
        set(&by_tree, tree, &(*n as f64).into())?;
    }
    set(&out, "cacheMissesByTree", &by_tree)?;
    Ok(out.into())
}

fn failure_to_js(failure: StorageFailure) -> JsValue {
    let obj = Object::new();
    // Setting properties on a fresh plain object cannot fail.
    let _ = set(&obj, "kind", &failure.kind.into());
    let _ = set(&obj, "message", &failure.message.into());
    obj.into()
}

fn storage_js_error(e: StorageError) -> JsValue {
    let kind = match e {
        StorageError::QuotaExceeded(_) => "quota",
        StorageError::Unavailable(_) => "unavailable",
        StorageError::UnknownTree(_) | StorageError::Backend(_) => "backend",
    };
    tagged_error(kind, &e.to_string())
}

/// A JS `Error` with a machine-readable `kind`, so the page can say something useful.
fn tagged_error(kind: &str, message: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    err.set_name("HearthError");
    let _ = set(&err, "kind", &kind.into());
    err.into()
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

    use super::log_levels;

    wasm_bindgen_test_configure!(run_in_shared_worker);

    #[wasm_bindgen_test]
    fn ruma_per_event_logs_are_off_and_hearth_keeps_info() {
        let levels = log_levels();
        assert!(!levels.would_enable("ruma_state_res::event_auth", &Level::INFO));
        assert!(!levels.would_enable("ruma_common::push", &Level::INFO));
        assert!(levels.would_enable("ruma_state_res::event_auth", &Level::WARN));
        assert!(levels.would_enable("hearth_core::federation::receive", &Level::INFO));
        assert!(levels.would_enable("hearth_web::relay", &Level::INFO));
    }
}
