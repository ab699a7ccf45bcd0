//! The IndexedDB backend of [`Storage`]: one object store per tree, one read-write
//! transaction per [`Batch`].
//!
//! Writes are pipelined one deep ([`Storage::begin_write`]): a batch's transaction is created,
//! its requests queued and its commit requested at once, and the server goes on preparing the
//! next batch while the browser commits it. IndexedDB runs a read transaction created after a
//! read-write one over the same store only once that has finished, so every later read sees
//! the batch; the read cache shows it at once. The next batch is issued only once this one is
//! committed, and not at all if it failed: it was prepared on top of it.
//!
//! Keys and values are stored as `Uint8Array`s. IndexedDB compares binary keys bytewise, which
//! is exactly the order the storage trait promises (the conformance suite checks it).
//!
//! Schema versioning: the IndexedDB version is `SCHEMA_VERSION * 1000 + TREES.len()`. Trees are
//! only ever added between layout changes, so a release that adds a tree raises the version by
//! itself and `onupgradeneeded` creates the missing store; a release that changes the layout
//! bumps `SCHEMA_VERSION` and migrates in [`upgrade`], keyed by the old schema version.

use std::cell::{Cell, RefCell};
use std::ops::Bound;
use std::rc::Rc;

use async_trait::async_trait;
use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::{Either, LocalBoxFuture, Shared, select};
use gloo_timers::future::TimeoutFuture;
use hearth_core::storage::{
    Batch, Direction, Durable, KeyRange, Op, SCHEMA_VERSION, Storage, StorageError, StorageResult,
    TREES,
};
use indexed_db_futures::KeyRange as IdbRange;
use indexed_db_futures::cursor::CursorDirection;
use indexed_db_futures::database::Database;
use indexed_db_futures::error::{DomException, Error as IdbError, OpenDbError};
use indexed_db_futures::internals::SystemRepr;
use indexed_db_futures::prelude::*;
use indexed_db_futures::transaction::{TransactionDurability, TransactionMode, TransactionOptions};
use js_sys::{ArrayBuffer, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::read_cache::ReadCache;

/// How long an open may stay blocked by another connection (an old tab that does not close
/// its database on `versionchange`) before we give up and report the database unavailable.
const BLOCKED_GRACE_MS: u32 = 2_000;

/// The IndexedDB version for this build's tree layout (see the module docs).
pub fn idb_version() -> u32 {
    SCHEMA_VERSION * 1000 + TREES.len() as u32
}

// `getAllRecords` (Chromium 141+) reads keys and values of a range in either direction in one
// request; without it a backward scan steps a cursor record by record. The helper flattens
// the records to [key, value, key, value, ...] so Rust walks one array.
#[wasm_bindgen(inline_js = r#"
export function has_get_all_records() {
  return typeof IDBObjectStore !== 'undefined' && 'getAllRecords' in IDBObjectStore.prototype;
}
export function commit_write(tx) {
  const done = new Promise((resolve, reject) => {
    tx.addEventListener('complete', () => resolve());
    tx.addEventListener('abort', () =>
      reject(tx.error ?? new DOMException('the write was aborted', 'AbortError')));
  });
  // Asking for the commit now lets the browser commit without waiting for this thread to
  // dispatch every request's success event first (it may be busy preparing the next write).
  if (typeof tx.commit === 'function') tx.commit();
  return done;
}
export function get_all_records(store, query, count, direction) {
  return new Promise((resolve, reject) => {
    const req = store.getAllRecords({ query, count, direction });
    req.onsuccess = () => {
      const flat = [];
      for (const r of req.result) flat.push(r.key, r.value);
      resolve(flat);
    };
    req.onerror = () => reject(req.error);
  });
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = has_get_all_records)]
    fn has_get_all_records_js() -> bool;

    /// Requests the commit of a transaction whose requests are queued; the promise settles
    /// when it is committed (or rejects with its error when it aborts).
    #[wasm_bindgen(catch)]
    fn commit_write(tx: &web_sys::IdbTransaction) -> Result<js_sys::Promise, JsValue>;

    #[wasm_bindgen(catch)]
    fn get_all_records(
        store: &web_sys::IdbObjectStore,
        query: &JsValue,
        count: u32,
        direction: &str,
    ) -> Result<js_sys::Promise, JsValue>;
}

thread_local! {
    static HAS_GET_ALL_RECORDS: bool = has_get_all_records_js();
}

fn has_get_all_records() -> bool {
    HAS_GET_ALL_RECORDS.with(|has| *has)
}

#[wasm_bindgen]
extern "C" {
    /// A monotonic clock with sub-millisecond resolution, in any global scope.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;

    /// `navigator.storage.estimate()`, on whatever global scope we run in.
    #[wasm_bindgen(js_namespace = ["navigator", "storage"], js_name = estimate, catch)]
    fn storage_estimate() -> Result<js_sys::Promise, JsValue>;
}

pub struct IndexedDbStorage {
    db: Database,
    name: String,
    /// Why the connection is no longer usable, once it is not.
    closed: Rc<RefCell<Option<String>>>,
    /// The last failure the backend reported, for the status page.
    last_error: Rc<RefCell<Option<StorageFailure>>>,
    stats: Rc<RefCell<OpStats>>,
    cache: Rc<RefCell<ReadCache>>,
    /// The write issued last, until it has settled.
    in_flight: Rc<RefCell<Option<WriteInFlight>>>,
    /// Whether scans may use `getAllRecords` where the browser has it.
    bulk_records: Cell<bool>,
    /// The browser holds these as event handlers; they must live as long as the connection.
    _on_versionchange: Closure<dyn FnMut()>,
    _on_close: Closure<dyn FnMut()>,
}

/// A storage failure as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFailure {
    /// `quota`, `unavailable` or `backend`.
    pub kind: &'static str,
    pub message: String,
}

/// How many operations of one kind ran, and how long they took in total.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OpCounter {
    pub count: u64,
    pub total_ms: f64,
}

impl OpCounter {
    fn record(&mut self, began_ms: f64) {
        self.count += 1;
        self.total_ms += performance_now() - began_ms;
    }
}

/// Where the server's time in storage goes, for benchmarks and the status page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpStats {
    pub gets: OpCounter,
    /// `get_many` calls (several point reads in one transaction).
    pub get_manys: OpCounter,
    pub scans: OpCounter,
    pub writes: OpCounter,
    /// Point reads answered from memory, and those that went to IndexedDB.
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_misses_by_tree: Vec<(&'static str, u64)>,
}

impl std::fmt::Debug for IndexedDbStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedDbStorage")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl IndexedDbStorage {
    /// Opens (creating or upgrading as needed) the database `name` at this build's layout.
    pub async fn open(name: &str) -> StorageResult<Self> {
        Self::open_at(name, idb_version()).await
    }

    /// Opens `name` at an explicit IndexedDB version. [`IndexedDbStorage::open`] is what a
    /// server uses; this exists so tests can play an older or newer release.
    pub async fn open_at(name: &str, version: u32) -> StorageResult<Self> {
        let db = open_database(name, version).await?;
        let raw: web_sys::IdbDatabase = db.as_sys().clone().unchecked_into();
        let present: Vec<String> = db.object_store_names().collect();
        if let Some(missing) = TREES.iter().find(|t| !present.iter().any(|p| p == *t)) {
            raw.close();
            return Err(StorageError::Backend(format!(
                "database {name:?} at version {} has no store for tree {missing:?}; \
                 the tree layout changed without a SCHEMA_VERSION bump",
                db.version()
            )));
        }

        let closed = Rc::new(RefCell::new(None));
        // A newer release wants to upgrade the database: step aside instead of blocking it.
        let on_versionchange = Closure::<dyn FnMut()>::new({
            let closed = closed.clone();
            let raw = raw.clone();
            move || {
                tracing::warn!("IndexedDB upgrade requested elsewhere; closing this connection");
                raw.close();
                closed.replace(Some(
                    "a newer version of Hearth took over the database; reload the page".to_owned(),
                ));
            }
        });
        // The browser closed the connection itself (site data cleared, disk failure).
        let on_close = Closure::<dyn FnMut()>::new({
            let closed = closed.clone();
            move || {
                tracing::error!("IndexedDB connection closed by the browser");
                closed.replace(Some(
                    "the browser closed the database connection".to_owned(),
                ));
            }
        });
        raw.set_onversionchange(Some(on_versionchange.as_ref().unchecked_ref()));
        raw.set_onclose(Some(on_close.as_ref().unchecked_ref()));

        Ok(Self {
            db,
            name: name.to_owned(),
            closed,
            last_error: Rc::default(),
            stats: Rc::default(),
            cache: Rc::default(),
            in_flight: Rc::default(),
            bulk_records: Cell::new(true),
            _on_versionchange: on_versionchange,
            _on_close: on_close,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Closes the connection; later calls fail with [`StorageError::Unavailable`].
    pub fn close(&self) {
        self.raw().close();
        self.cache.borrow_mut().clear();
        self.closed
            .replace(Some("the database was closed".to_owned()));
    }

    /// The most recent failure, cleared by reading it.
    pub fn take_last_error(&self) -> Option<StorageFailure> {
        self.last_error.borrow_mut().take()
    }

    /// The most recent failure, left in place.
    pub fn last_error(&self) -> Option<StorageFailure> {
        self.last_error.borrow().clone()
    }

    /// Turns the single-request `getAllRecords` scans off, so tests can exercise the cursor
    /// path that browsers without it (Firefox, Safari today) take.
    pub fn set_bulk_records(&self, enabled: bool) {
        self.bulk_records.set(enabled);
    }

    /// Operation counts and time spent since the connection opened.
    pub fn op_stats(&self) -> OpStats {
        let cache = self.cache.borrow();
        OpStats {
            cache_hits: cache.hits(),
            cache_misses: cache.misses(),
            cache_misses_by_tree: cache
                .misses_by_tree()
                .iter()
                .map(|(t, n)| (*t, *n))
                .collect(),
            ..self.stats.borrow().clone()
        }
    }

    /// Number of records in `tree`, counted by IndexedDB without reading them.
    pub async fn count(&self, tree: &'static str) -> StorageResult<u64> {
        let result = async {
            let tx = self.transaction(&[tree], TransactionMode::Readonly)?;
            let store = tx.object_store(tree).map_err(map_error)?;
            let n = store
                .count()
                .primitive()
                .map_err(map_error)?
                .await
                .map_err(map_error)?;
            Ok(u64::from(n))
        }
        .await;
        self.note(result)
    }

    fn raw(&self) -> web_sys::IdbDatabase {
        self.db.as_sys().clone().unchecked_into()
    }

    fn check_open(&self) -> StorageResult<()> {
        match &*self.closed.borrow() {
            Some(reason) => Err(StorageError::Unavailable(reason.clone())),
            None => Ok(()),
        }
    }

    fn transaction(
        &self,
        trees: &[&'static str],
        mode: TransactionMode,
    ) -> StorageResult<indexed_db_futures::transaction::Transaction<'_>> {
        self.check_open()?;
        if let Some(unknown) = trees.iter().find(|t| !TREES.contains(t)) {
            return Err(StorageError::UnknownTree((*unknown).to_owned()));
        }
        self.db
            .transaction(trees)
            .with_mode(mode)
            .with_options(TransactionOptions::new().with_durability(TransactionDurability::Relaxed))
            .build()
            .map_err(|e| match e {
                IdbError::DomException(DomException::NotFoundError(_)) => {
                    StorageError::UnknownTree(trees.join(","))
                }
                other => self.map_closed(map_error(other)),
            })
    }

    /// An `InvalidStateError` after the browser closed us means "unavailable", not "bug".
    fn map_closed(&self, e: StorageError) -> StorageError {
        closed_cause(&self.closed, e)
    }

    /// Records failures that the page should hear about, and passes the result on.
    fn note<T>(&self, result: StorageResult<T>) -> StorageResult<T> {
        if let Err(e) = &result {
            record_failure(&self.last_error, e);
        }
        result
    }

    async fn get_inner(&self, tree: &'static str, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        self.check_open()?;
        if !TREES.contains(&tree) {
            return Err(StorageError::UnknownTree(tree.to_owned()));
        }
        if let Some(known) = self.cache.borrow_mut().get(tree, key) {
            return Ok(known);
        }
        let ticket = self.cache.borrow().ticket();
        let value = self.read_one(tree, key).await?;
        self.cache.borrow_mut().fill(ticket, tree, key, &value);
        Ok(value)
    }

    async fn get_many_inner(
        &self,
        tree: &'static str,
        keys: &[Vec<u8>],
    ) -> StorageResult<Vec<Option<Vec<u8>>>> {
        self.check_open()?;
        if !TREES.contains(&tree) {
            return Err(StorageError::UnknownTree(tree.to_owned()));
        }
        let mut out: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        let mut unknown = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match self.cache.borrow_mut().get(tree, k) {
                Some(known) => out[i] = known,
                None => unknown.push(i),
            }
        }
        if unknown.is_empty() {
            return Ok(out);
        }
        let ticket = self.cache.borrow().ticket();
        let tx = self.transaction(&[tree], TransactionMode::Readonly)?;
        let store = tx.object_store(tree).map_err(map_error)?;
        // Every request is issued before the first is awaited: one transaction, one round.
        let mut requests = Vec::with_capacity(unknown.len());
        for &i in &unknown {
            requests.push(
                store
                    .get::<JsValue, JsValue, _>(IdbRange::Only(bytes_to_js(&keys[i])))
                    .primitive()
                    .map_err(map_error)?,
            );
        }
        for (&i, request) in unknown.iter().zip(requests) {
            let value: Option<JsValue> =
                request.await.map_err(|e| self.map_closed(map_error(e)))?;
            let value = value.map(|v| js_to_bytes(&v)).transpose()?;
            self.cache.borrow_mut().fill(ticket, tree, &keys[i], &value);
            out[i] = value;
        }
        Ok(out)
    }

    async fn read_one(&self, tree: &'static str, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        let tx = self.transaction(&[tree], TransactionMode::Readonly)?;
        let store = tx.object_store(tree).map_err(map_error)?;
        let value: Option<JsValue> = store
            .get::<JsValue, JsValue, _>(IdbRange::Only(bytes_to_js(key)))
            .primitive()
            .map_err(map_error)?
            .await
            .map_err(|e| self.map_closed(map_error(e)))?;
        value.map(|v| js_to_bytes(&v)).transpose()
    }

    async fn scan_inner(
        &self,
        tree: &'static str,
        range: KeyRange,
        direction: Direction,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        // Check the tree even for scans that cannot match, so a bad name is never silent.
        let tx = self.transaction(&[tree], TransactionMode::Readonly)?;
        // IndexedDB throws on inverted ranges; the trait promises an empty answer instead.
        if range.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let store = tx.object_store(tree).map_err(map_error)?;
        let query = idb_key_range(&range)?;
        let count = u32::try_from(limit).unwrap_or(u32::MAX);
        if self.bulk_records.get() && has_get_all_records() {
            let sys: &web_sys::IdbObjectStore = store.as_sys().unchecked_ref();
            let order = match direction {
                Direction::Forward => "next",
                Direction::Backward => "prev",
            };
            let promise =
                get_all_records(sys, &query, count, order).map_err(|e| js_storage_error(&e))?;
            let records = JsFuture::from(promise)
                .await
                .map_err(|e| self.map_closed(js_storage_error(&e)))?;
            let records = js_sys::Array::from(&records);
            let mut out = Vec::with_capacity(records.length() as usize / 2);
            for pair in records.iter().collect::<Vec<_>>().chunks_exact(2) {
                out.push((js_to_bytes(&pair[0])?, js_to_bytes(&pair[1])?));
            }
            return Ok(out);
        }
        match direction {
            Direction::Forward => {
                // Two bulk reads in one transaction see the same snapshot, and are far cheaper
                // than stepping a cursor record by record.
                let keys = store
                    .get_all_keys::<JsValue>()
                    .with_query::<JsValue, _>(IdbRange::Only(query.clone()))
                    .with_limit(count)
                    .primitive()
                    .map_err(map_error)?;
                let values = store
                    .get_all::<JsValue>()
                    .with_query::<JsValue, _>(IdbRange::Only(query))
                    .with_limit(count)
                    .primitive()
                    .map_err(map_error)?;
                let keys = keys.await.map_err(|e| self.map_closed(map_error(e)))?;
                let values = values.await.map_err(|e| self.map_closed(map_error(e)))?;
                let mut out = Vec::new();
                for (k, v) in keys.zip(values) {
                    out.push((
                        js_to_bytes(&k.map_err(map_error)?)?,
                        js_to_bytes(&v.map_err(map_error)?)?,
                    ));
                }
                Ok(out)
            }
            Direction::Backward => {
                let cursor = store
                    .open_cursor()
                    .with_query::<JsValue, _>(IdbRange::Only(query))
                    .with_direction(CursorDirection::Prev)
                    .primitive()
                    .map_err(map_error)?
                    .await
                    .map_err(|e| self.map_closed(map_error(e)))?;
                let mut out = Vec::new();
                let Some(mut cursor) = cursor else {
                    return Ok(out);
                };
                while out.len() < limit {
                    let Some(value) = cursor.next_record::<JsValue>().await.map_err(map_error)?
                    else {
                        break;
                    };
                    let key = cursor.key::<JsValue>().map_err(map_error)?.ok_or_else(|| {
                        StorageError::Backend("cursor record without a key".into())
                    })?;
                    out.push((js_to_bytes(&key)?, js_to_bytes(&value)?));
                }
                Ok(out)
            }
        }
    }

    /// Waits until no write is in flight. Fails if the write issued last failed, since the
    /// caller may have prepared its batch on top of it: a failed write stays in the slot
    /// until it has failed the next one, so exactly one write pays for it.
    async fn wait_for_the_write_ahead(&self) -> StorageResult<()> {
        loop {
            let Some(ahead) = self.in_flight.borrow().clone() else {
                return Ok(());
            };
            let result = ahead.clone().await;
            forget_if_current(&self.in_flight, &ahead);
            if let Err(e) = result {
                return self.note(Err(StorageError::Unavailable(format!(
                    "an earlier write failed, and this one may have been prepared on top of \
                     it: {e}"
                ))));
            }
        }
    }

    /// Makes an issued write the one in flight, and returns what settles with it.
    fn track(&self, promise: js_sys::Promise, began: f64) -> Durable {
        let (cache, stats, last_error) = (
            self.cache.clone(),
            self.stats.clone(),
            self.last_error.clone(),
        );
        let closed = self.closed.clone();
        let settled: WriteInFlight = async move {
            let result = JsFuture::from(promise)
                .await
                .map(|_| ())
                .map_err(|e| closed_cause(&closed, js_storage_error(&e)));
            stats.borrow_mut().writes.record(began);
            if let Err(e) = &result {
                // The cache showed the batch since it was issued.
                cache.borrow_mut().clear();
                record_failure(&last_error, e);
            }
            result
        }
        .boxed_local()
        .shared();
        *self.in_flight.borrow_mut() = Some(settled.clone());
        // Settled even if nobody waits for it, so that a failure always clears the cache;
        // forgotten once committed (a failure is forgotten by the write it fails).
        let slot = self.in_flight.clone();
        let driven = settled.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if driven.clone().await.is_ok() {
                forget_if_current(&slot, &driven);
            }
        });
        Box::pin(settled)
    }

    /// For tests: issues, like [`Storage::begin_write`], a write that IndexedDB accepts and
    /// then aborts (it adds `key`, which must exist), as a full disk would abort a real one.
    #[doc(hidden)]
    pub async fn begin_write_that_aborts(
        &self,
        tree: &'static str,
        key: &[u8],
    ) -> StorageResult<Durable> {
        self.wait_for_the_write_ahead().await?;
        let tx = self.transaction(&[tree], TransactionMode::Readwrite)?;
        let raw_tx: web_sys::IdbTransaction = tx.as_sys().clone().unchecked_into();
        let store = tx.object_store(tree).map_err(map_error)?;
        drop(
            store
                .add(bytes_to_js(b"duplicate"))
                .with_key(bytes_to_js(key))
                .primitive()
                .map_err(map_error)?,
        );
        drop(store);
        let promise = commit_write(&raw_tx).map_err(|e| js_storage_error(&e))?;
        drop(tx);
        Ok(self.track(promise, performance_now()))
    }

    /// Creates the batch's transaction, queues its requests and asks for its commit, all
    /// before returning; the promise settles when the commit has.
    fn issue(&self, batch: &Batch) -> StorageResult<js_sys::Promise> {
        let mut trees: Vec<&'static str> = Vec::new();
        for op in &batch.ops {
            let (Op::Put { tree, .. } | Op::Delete { tree, .. }) = op;
            if !trees.contains(tree) {
                trees.push(tree);
            }
        }
        // Unknown trees are refused before the transaction exists, so nothing is half-applied.
        // Until the commit is asked for, dropping `tx` on an error aborts it.
        let tx = self.transaction(&trees, TransactionMode::Readwrite)?;
        let raw_tx: web_sys::IdbTransaction = tx.as_sys().clone().unchecked_into();
        let mut stores = Vec::with_capacity(trees.len());
        for tree in &trees {
            stores.push((*tree, tx.object_store(tree).map_err(map_error)?));
        }
        let store_for = |tree: &str| {
            stores
                .iter()
                .find(|(t, _)| *t == tree)
                .map(|(_, s)| s)
                .ok_or_else(|| StorageError::UnknownTree(tree.to_owned()))
        };
        // Requests are queued by the browser as they are built and run in order; their
        // failures surface as the transaction's error on commit.
        for op in &batch.ops {
            match op {
                Op::Put { tree, key, value } => {
                    let req = store_for(tree)?
                        .put(bytes_to_js(value))
                        .with_key(bytes_to_js(key))
                        .primitive()
                        .map_err(map_error)?;
                    drop(req);
                }
                Op::Delete { tree, key } => {
                    let req = store_for(tree)?
                        .delete::<JsValue, _>(IdbRange::Only(bytes_to_js(key)))
                        .primitive()
                        .map_err(map_error)?;
                    drop(req);
                }
            }
        }
        drop(stores);
        let promise = commit_write(&raw_tx).map_err(|e| self.map_closed(js_storage_error(&e)))?;
        // The wrapper aborts a transaction it did not commit itself when dropped; this one is
        // committing, which IndexedDB does not let an abort undo.
        drop(tx);
        Ok(promise)
    }
}

/// The write issued last: settles when it is committed or has failed.
type WriteInFlight = Shared<LocalBoxFuture<'static, StorageResult<()>>>;

/// An error after the browser closed the connection means "unavailable", not "bug".
fn closed_cause(closed: &RefCell<Option<String>>, e: StorageError) -> StorageError {
    match (&*closed.borrow(), e) {
        (Some(reason), StorageError::Backend(_)) => StorageError::Unavailable(reason.clone()),
        (_, e) => e,
    }
}

/// Empties the in-flight slot if it still holds `settled`.
fn forget_if_current(slot: &RefCell<Option<WriteInFlight>>, settled: &WriteInFlight) {
    let mut slot = slot.borrow_mut();
    if slot.as_ref().is_some_and(|f| f.ptr_eq(settled)) {
        *slot = None;
    }
}

/// Records a failure that the page should hear about.
fn record_failure(last_error: &RefCell<Option<StorageFailure>>, e: &StorageError) {
    let kind = match e {
        StorageError::QuotaExceeded(_) => Some("quota"),
        StorageError::Unavailable(_) => Some("unavailable"),
        StorageError::Backend(_) => Some("backend"),
        // A caller naming a tree that does not exist is a bug in the caller, not a storage
        // condition the person at the page can do anything about.
        StorageError::UnknownTree(_) => None,
    };
    if let Some(kind) = kind {
        last_error.replace(Some(StorageFailure {
            kind,
            message: e.to_string(),
        }));
    }
}

impl Drop for IndexedDbStorage {
    fn drop(&mut self) {
        // Leaving the connection open would block the next release's upgrade until GC.
        self.raw().close();
    }
}

#[async_trait(?Send)]
impl Storage for IndexedDbStorage {
    async fn get(&self, tree: &'static str, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        let began = performance_now();
        let result = self.get_inner(tree, key).await;
        self.stats.borrow_mut().gets.record(began);
        self.note(result)
    }

    async fn scan(
        &self,
        tree: &'static str,
        range: KeyRange,
        direction: Direction,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let began = performance_now();
        let result = self.scan_inner(tree, range, direction, limit).await;
        self.stats.borrow_mut().scans.record(began);
        self.note(result)
    }

    async fn get_many(
        &self,
        tree: &'static str,
        keys: &[Vec<u8>],
    ) -> StorageResult<Vec<Option<Vec<u8>>>> {
        let began = performance_now();
        let result = self.get_many_inner(tree, keys).await;
        self.stats.borrow_mut().get_manys.record(began);
        self.note(result)
    }

    async fn begin_write(&self, batch: Batch) -> StorageResult<Durable> {
        self.wait_for_the_write_ahead().await?;
        self.check_open()?;
        if batch.is_empty() {
            return Ok(Box::pin(std::future::ready(Ok(()))));
        }
        let began = performance_now();
        // Each put costs; a row rewritten by several events of one batch is written once.
        let batch = batch.last_per_key();
        let promise = self.note(self.issue(&batch))?;
        self.cache.borrow_mut().committed(&batch);
        Ok(self.track(promise, began))
    }

    /// Bytes the origin uses, as the browser estimates them (IndexedDB has no per-database
    /// figure; everything else the origin stores is small next to it).
    async fn size_estimate(&self) -> StorageResult<u64> {
        let promise = storage_estimate().map_err(|e| StorageError::Backend(js_message(&e)))?;
        let estimate = JsFuture::from(promise)
            .await
            .map_err(|e| StorageError::Backend(js_message(&e)))?;
        let usage = js_sys::Reflect::get(&estimate, &JsValue::from_str("usage"))
            .ok()
            .and_then(|u| u.as_f64())
            .unwrap_or(0.0);
        Ok(usage.max(0.0) as u64)
    }
}

/// Opens the database, giving up (and cleaning up) if another connection blocks the upgrade.
async fn open_database(name: &str, version: u32) -> StorageResult<Database> {
    let (blocked_tx, blocked_rx) = oneshot::channel::<()>();
    let blocked_tx = Cell::new(Some(blocked_tx));
    let request = Database::open(name.to_owned())
        .with_version(version)
        .with_on_blocked(move |_event| {
            if let Some(tx) = blocked_tx.take() {
                let _ = tx.send(());
            }
            Ok(())
        })
        .with_on_upgrade_needed(|event, db| upgrade(&db, event.old_version()));

    // The open runs to completion in its own task even if we stop waiting for it, so that a
    // connection that opens late is closed instead of leaking and blocking future upgrades.
    let (done_tx, done_rx) = oneshot::channel();
    wasm_bindgen_futures::spawn_local(async move {
        let result = request.await;
        if let Err(Ok(db)) = done_tx.send(result) {
            db.close();
        }
    });

    let outcome = match select(done_rx, blocked_rx).await {
        Either::Left((outcome, _)) => outcome,
        Either::Right((_, done_rx)) => {
            match select(done_rx, TimeoutFuture::new(BLOCKED_GRACE_MS)).await {
                Either::Left((outcome, _)) => outcome,
                Either::Right(_) => {
                    return Err(StorageError::Unavailable(format!(
                        "the database {name:?} is blocked by another open Hearth tab or window \
                         running an older version; close it and retry"
                    )));
                }
            }
        }
    };
    match outcome {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(map_open_error(e)),
        Err(_canceled) => Err(StorageError::Backend("the open request vanished".into())),
    }
}

/// `onupgradeneeded`: brings an older layout (or none) up to this build's.
fn upgrade(db: &Database, old_version: f64) -> indexed_db_futures::Result<()> {
    let old_schema = (old_version as u64) / 1000;
    tracing::info!(
        old_version,
        old_schema,
        new_version = idb_version(),
        "upgrading IndexedDB layout"
    );
    // Schema 1 is the first layout: nothing to migrate yet, only stores to create. A future
    // layout change matches on `old_schema` here and rewrites records before creating stores.
    let present: Vec<String> = db.object_store_names().collect();
    for tree in TREES {
        if !present.iter().any(|p| p == tree) {
            db.create_object_store(*tree).build()?;
        }
    }
    Ok(())
}

fn idb_key_range(range: &KeyRange) -> StorageResult<JsValue> {
    let bound = |b: &Bound<Vec<u8>>| match b {
        Bound::Included(k) => Some((bytes_to_js(k), false)),
        Bound::Excluded(k) => Some((bytes_to_js(k), true)),
        Bound::Unbounded => None,
    };
    let made = match (bound(&range.start), bound(&range.end)) {
        (None, None) => return Ok(JsValue::UNDEFINED),
        (Some((lo, lo_open)), None) => web_sys::IdbKeyRange::lower_bound_with_open(&lo, lo_open),
        (None, Some((hi, hi_open))) => web_sys::IdbKeyRange::upper_bound_with_open(&hi, hi_open),
        (Some((lo, lo_open)), Some((hi, hi_open))) => {
            web_sys::IdbKeyRange::bound_with_lower_open_and_upper_open(&lo, &hi, lo_open, hi_open)
        }
    };
    made.map(JsValue::from)
        .map_err(|e| StorageError::Backend(format!("bad key range: {}", js_message(&e))))
}

fn bytes_to_js(bytes: &[u8]) -> JsValue {
    Uint8Array::from(bytes).into()
}

/// IndexedDB hands binary keys back as `ArrayBuffer`s and stored values as `Uint8Array`s.
fn js_to_bytes(value: &JsValue) -> StorageResult<Vec<u8>> {
    if let Some(array) = value.dyn_ref::<Uint8Array>() {
        Ok(array.to_vec())
    } else if let Some(buffer) = value.dyn_ref::<ArrayBuffer>() {
        Ok(Uint8Array::new(buffer).to_vec())
    } else {
        Err(StorageError::Backend("stored record is not binary".into()))
    }
}

fn map_open_error(e: OpenDbError) -> StorageError {
    match e {
        OpenDbError::Base(e) => match map_error(e) {
            // VersionError: the database was created by a newer release than this one.
            StorageError::Backend(msg) if msg.starts_with("VersionError") => {
                StorageError::Unavailable(format!(
                    "the database was written by a newer version of Hearth; reload to update ({msg})"
                ))
            }
            other => other,
        },
        OpenDbError::VersionZero => StorageError::Backend("IndexedDB version 0 requested".into()),
        other => StorageError::Unavailable(format!("IndexedDB is not available here: {other}")),
    }
}

pub(crate) fn map_error(e: IdbError) -> StorageError {
    match e {
        IdbError::DomException(dom) => map_dom_exception(dom.as_sys()),
        other => StorageError::Backend(other.to_string()),
    }
}

/// Maps a `DOMException` by its name, the only stable part of it.
pub fn map_dom_exception(dom: &web_sys::DomException) -> StorageError {
    let name = dom.name();
    let message = dom.message();
    match name.as_str() {
        "QuotaExceededError" if message.is_empty() => StorageError::QuotaExceeded(
            "the browser refused to store more data for this site".into(),
        ),
        "QuotaExceededError" => StorageError::QuotaExceeded(message),
        // The connection was closed under us (versionchange, close()).
        "InvalidStateError" | "TransactionInactiveError" => {
            StorageError::Unavailable(format!("{name}: {message}"))
        }
        "NotFoundError" => StorageError::UnknownTree(message),
        _ => StorageError::Backend(format!("{name}: {message}")),
    }
}

fn js_storage_error(value: &JsValue) -> StorageError {
    match value.dyn_ref::<web_sys::DomException>() {
        Some(dom) => map_dom_exception(dom),
        None => StorageError::Backend(js_message(value)),
    }
}

fn js_message(value: &JsValue) -> String {
    if let Some(dom) = value.dyn_ref::<web_sys::DomException>() {
        format!("{}: {}", dom.name(), dom.message())
    } else if let Some(err) = value.dyn_ref::<js_sys::Error>() {
        String::from(err.message())
    } else {
        format!("{value:?}")
    }
}
