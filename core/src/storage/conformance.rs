//! The storage conformance suite, written once for every backend.
//!
//! Each function takes a fresh, empty store and panics on a violation. Backends run the whole
//! suite through [`storage_conformance_tests!`](crate::storage_conformance_tests): natively
//! with `#[test]`, in the browser with `#[wasm_bindgen_test]`.

use std::ops::Bound;

use super::{Batch, Direction, KeyRange, Storage, StorageError};

fn kv(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (k.to_vec(), v.to_vec())
}

async fn put(s: &dyn Storage, tree: &'static str, k: &[u8], v: &[u8]) {
    let mut b = Batch::new();
    b.put(tree, k, v);
    s.write(b).await.expect("write");
}

pub async fn get_missing_is_none(s: &dyn Storage) {
    assert_eq!(s.get("test", b"nope").await.expect("get"), None);
}

pub async fn put_get_overwrite_delete(s: &dyn Storage) {
    put(s, "test", b"a", b"1").await;
    assert_eq!(s.get("test", b"a").await.expect("get"), Some(b"1".to_vec()));
    put(s, "test", b"a", b"2").await;
    assert_eq!(s.get("test", b"a").await.expect("get"), Some(b"2".to_vec()));
    let mut b = Batch::new();
    b.delete("test", b"a".to_vec());
    s.write(b).await.expect("delete");
    assert_eq!(s.get("test", b"a").await.expect("get"), None);
    // Deleting a missing key is not an error.
    let mut b = Batch::new();
    b.delete("test", b"never".to_vec());
    s.write(b).await.expect("delete missing");
}

pub async fn trees_are_separate(s: &dyn Storage) {
    put(s, "test", b"k", b"test").await;
    put(s, "meta", b"k", b"meta").await;
    assert_eq!(
        s.get("test", b"k").await.expect("get"),
        Some(b"test".to_vec())
    );
    assert_eq!(
        s.get("meta", b"k").await.expect("get"),
        Some(b"meta".to_vec())
    );
}

pub async fn scan_orders_bytes_both_ways(s: &dyn Storage) {
    let keys: [&[u8]; 6] = [b"b", b"a\xff", b"a", b"a\x00", b"\x00", b"\xff\xff"];
    let mut b = Batch::new();
    for k in keys {
        b.put("test", k, k);
    }
    s.write(b).await.expect("write");
    let fwd = s
        .scan("test", KeyRange::all(), Direction::Forward, 100)
        .await
        .expect("scan");
    let got: Vec<Vec<u8>> = fwd.into_iter().map(|(k, _)| k).collect();
    let want: Vec<Vec<u8>> = [&b"\x00"[..], b"a", b"a\x00", b"a\xff", b"b", b"\xff\xff"]
        .iter()
        .map(|k| k.to_vec())
        .collect();
    assert_eq!(got, want);
    let back = s
        .scan("test", KeyRange::all(), Direction::Backward, 100)
        .await
        .expect("scan");
    let got: Vec<Vec<u8>> = back.into_iter().map(|(k, _)| k).collect();
    let mut rev = want.clone();
    rev.reverse();
    assert_eq!(got, rev);
}

pub async fn scan_respects_limit(s: &dyn Storage) {
    let mut b = Batch::new();
    for i in 0u32..50 {
        b.put("test", i.to_be_bytes().to_vec(), i.to_string());
    }
    s.write(b).await.expect("write");
    let fwd = s
        .scan("test", KeyRange::all(), Direction::Forward, 5)
        .await
        .expect("scan");
    assert_eq!(fwd.len(), 5);
    assert_eq!(fwd[0], kv(&0u32.to_be_bytes(), b"0"));
    assert_eq!(fwd[4], kv(&4u32.to_be_bytes(), b"4"));
    let back = s
        .scan("test", KeyRange::all(), Direction::Backward, 3)
        .await
        .expect("scan");
    assert_eq!(back.len(), 3);
    assert_eq!(back[0], kv(&49u32.to_be_bytes(), b"49"));
    assert_eq!(back[2], kv(&47u32.to_be_bytes(), b"47"));
    assert!(
        s.scan("test", KeyRange::all(), Direction::Forward, 0)
            .await
            .expect("scan")
            .is_empty()
    );
}

pub async fn scan_bounds(s: &dyn Storage) {
    let mut b = Batch::new();
    for k in [b"k1", b"k2", b"k3", b"k4", b"k5"] {
        b.put("test", k.to_vec(), k.to_vec());
    }
    s.write(b).await.expect("write");
    let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    let r = KeyRange::new(
        Bound::Included(b"k2".to_vec()),
        Bound::Excluded(b"k4".to_vec()),
    );
    assert_eq!(
        keys(
            s.scan("test", r.clone(), Direction::Forward, 10)
                .await
                .expect("scan")
        ),
        vec![b"k2".to_vec(), b"k3".to_vec()]
    );
    assert_eq!(
        keys(
            s.scan("test", r, Direction::Backward, 10)
                .await
                .expect("scan")
        ),
        vec![b"k3".to_vec(), b"k2".to_vec()]
    );
    let r = KeyRange::new(
        Bound::Excluded(b"k2".to_vec()),
        Bound::Included(b"k4".to_vec()),
    );
    assert_eq!(
        keys(
            s.scan("test", r.clone(), Direction::Forward, 10)
                .await
                .expect("scan")
        ),
        vec![b"k3".to_vec(), b"k4".to_vec()]
    );
    assert_eq!(
        keys(
            s.scan("test", r, Direction::Backward, 1)
                .await
                .expect("scan")
        ),
        vec![b"k4".to_vec()]
    );
    let r = KeyRange::new(Bound::Unbounded, Bound::Excluded(b"k2".to_vec()));
    assert_eq!(
        keys(
            s.scan("test", r, Direction::Backward, 10)
                .await
                .expect("scan")
        ),
        vec![b"k1".to_vec()]
    );
    let r = KeyRange::new(Bound::Excluded(b"k4".to_vec()), Bound::Unbounded);
    assert_eq!(
        keys(
            s.scan("test", r, Direction::Forward, 10)
                .await
                .expect("scan")
        ),
        vec![b"k5".to_vec()]
    );
    // An empty or inverted range yields nothing rather than an error.
    let r = KeyRange::new(
        Bound::Included(b"k4".to_vec()),
        Bound::Excluded(b"k2".to_vec()),
    );
    assert!(
        s.scan("test", r, Direction::Forward, 10)
            .await
            .expect("scan")
            .is_empty()
    );
    let r = KeyRange::new(
        Bound::Excluded(b"k3".to_vec()),
        Bound::Excluded(b"k3".to_vec()),
    );
    assert!(
        s.scan("test", r, Direction::Backward, 10)
            .await
            .expect("scan")
            .is_empty()
    );
}

pub async fn prefix_scan(s: &dyn Storage) {
    let mut b = Batch::new();
    for k in [
        &b"room\x00a"[..],
        b"room\x00b",
        b"room\x01",
        b"roo",
        b"room\xff",
        b"\xff\xff\xfe",
        b"\xff\xff\xff",
    ] {
        b.put("test", k.to_vec(), b"".to_vec());
    }
    s.write(b).await.expect("write");
    let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(
            s.scan(
                "test",
                KeyRange::prefix(b"room\x00"),
                Direction::Forward,
                10
            )
            .await
            .expect("scan")
        ),
        vec![b"room\x00a".to_vec(), b"room\x00b".to_vec()]
    );
    assert_eq!(
        keys(
            s.scan("test", KeyRange::prefix(b"room"), Direction::Backward, 10)
                .await
                .expect("scan")
        ),
        vec![
            b"room\xff".to_vec(),
            b"room\x01".to_vec(),
            b"room\x00b".to_vec(),
            b"room\x00a".to_vec()
        ]
    );
    // A prefix of all 0xff bytes has no successor and must run to the end of the tree.
    assert_eq!(
        keys(
            s.scan(
                "test",
                KeyRange::prefix(b"\xff\xff"),
                Direction::Forward,
                10
            )
            .await
            .expect("scan")
        ),
        vec![b"\xff\xff\xfe".to_vec(), b"\xff\xff\xff".to_vec()]
    );
}

pub async fn batch_spans_trees_and_applies_in_order(s: &dyn Storage) {
    put(s, "test", b"gone", b"x").await;
    let mut b = Batch::new();
    b.put("test", b"x".to_vec(), b"1".to_vec());
    b.put("meta", b"y".to_vec(), b"2".to_vec());
    b.put("test", b"x".to_vec(), b"3".to_vec());
    b.delete("test", b"gone".to_vec());
    b.delete("test", b"z".to_vec());
    b.put("test", b"z".to_vec(), b"4".to_vec());
    s.write(b).await.expect("write");
    assert_eq!(s.get("test", b"x").await.expect("get"), Some(b"3".to_vec()));
    assert_eq!(s.get("meta", b"y").await.expect("get"), Some(b"2".to_vec()));
    assert_eq!(s.get("test", b"gone").await.expect("get"), None);
    assert_eq!(s.get("test", b"z").await.expect("get"), Some(b"4".to_vec()));
}

pub async fn failed_batch_leaves_nothing(s: &dyn Storage) {
    put(s, "test", b"keep", b"old").await;
    let mut b = Batch::new();
    b.put("test", b"keep".to_vec(), b"new".to_vec());
    b.put("test", b"fresh".to_vec(), b"1".to_vec());
    b.ops.push(super::Op::Put {
        tree: "no_such_tree",
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    });
    let err = s
        .write(b)
        .await
        .expect_err("a batch naming an unknown tree must fail");
    assert!(
        matches!(err, StorageError::UnknownTree(_) | StorageError::Backend(_)),
        "{err:?}"
    );
    assert_eq!(
        s.get("test", b"keep").await.expect("get"),
        Some(b"old".to_vec())
    );
    assert_eq!(s.get("test", b"fresh").await.expect("get"), None);
}

pub async fn unknown_tree_is_an_error(s: &dyn Storage) {
    assert!(s.get("no_such_tree", b"k").await.is_err());
    assert!(
        s.scan("no_such_tree", KeyRange::all(), Direction::Forward, 1)
            .await
            .is_err()
    );
}

pub async fn large_values_and_empty_values(s: &dyn Storage) {
    let big: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    put(s, "test", b"big", &big).await;
    put(s, "test", b"empty", b"").await;
    assert_eq!(s.get("test", b"big").await.expect("get"), Some(big));
    assert_eq!(
        s.get("test", b"empty").await.expect("get"),
        Some(Vec::new())
    );
}

pub async fn many_keys_in_one_batch(s: &dyn Storage) {
    let mut b = Batch::new();
    for i in (0u32..2000).rev() {
        b.put("test", i.to_be_bytes().to_vec(), i.to_le_bytes().to_vec());
    }
    s.write(b).await.expect("write");
    let all = s
        .scan("test", KeyRange::all(), Direction::Forward, 5000)
        .await
        .expect("scan");
    assert_eq!(all.len(), 2000);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(all[1999].1, 1999u32.to_le_bytes().to_vec());
}

pub async fn get_many_answers_in_order(s: &dyn Storage) {
    put(s, "test", b"b", b"2").await;
    put(s, "test", b"a", b"1").await;
    let keys = vec![b"a".to_vec(), b"zz".to_vec(), b"b".to_vec(), b"a".to_vec()];
    let got = s.get_many("test", &keys).await.expect("get_many");
    assert_eq!(
        got,
        vec![
            Some(b"1".to_vec()),
            None,
            Some(b"2".to_vec()),
            Some(b"1".to_vec())
        ]
    );
    assert_eq!(
        s.get_many("test", &[]).await.expect("none"),
        Vec::<Option<Vec<u8>>>::new()
    );
    // What a read found absent is written later, and read again as written.
    put(s, "test", b"zz", b"3").await;
    assert_eq!(
        s.get_many("test", &[b"zz".to_vec()]).await.expect("after"),
        vec![Some(b"3".to_vec())]
    );
    assert!(matches!(
        s.get_many("no_such_tree", &keys).await,
        Err(StorageError::UnknownTree(_))
    ));
}

pub async fn a_batch_keeps_its_last_op_per_key(s: &dyn Storage) {
    let mut b = Batch::new();
    b.put("test", b"k".to_vec(), b"1".to_vec());
    b.put("meta", b"k".to_vec(), b"x".to_vec());
    b.put("test", b"k".to_vec(), b"2".to_vec());
    b.delete("test", b"gone".to_vec());
    b.put("test", b"gone".to_vec(), b"back".to_vec());
    b.put("test", b"del".to_vec(), b"v".to_vec());
    b.delete("test", b"del".to_vec());
    let b = b.last_per_key();
    assert_eq!(b.ops.len(), 4);
    s.write(b).await.expect("write");
    assert_eq!(s.get("test", b"k").await.expect("k"), Some(b"2".to_vec()));
    assert_eq!(
        s.get("meta", b"k").await.expect("meta"),
        Some(b"x".to_vec())
    );
    assert_eq!(
        s.get("test", b"gone").await.expect("gone"),
        Some(b"back".to_vec())
    );
    assert_eq!(s.get("test", b"del").await.expect("del"), None);
}

/// Generates one test per conformance function for a backend.
///
/// `storage_conformance_tests!(native, make)` emits `#[test]` functions driven by a local
/// executor; `storage_conformance_tests!(wasm, make)` emits `#[wasm_bindgen_test]` async tests.
/// `make` is an async function returning a fresh, empty store.
#[macro_export]
macro_rules! storage_conformance_tests {
    (native, $make:path) => {
        $crate::storage_conformance_tests!(@each native, $make,
            get_missing_is_none, put_get_overwrite_delete, trees_are_separate,
            scan_orders_bytes_both_ways, scan_respects_limit, scan_bounds, prefix_scan,
            batch_spans_trees_and_applies_in_order, failed_batch_leaves_nothing,
            unknown_tree_is_an_error, large_values_and_empty_values, many_keys_in_one_batch,
            get_many_answers_in_order, a_batch_keeps_its_last_op_per_key);
    };
    (wasm, $make:path) => {
        $crate::storage_conformance_tests!(@each wasm, $make,
            get_missing_is_none, put_get_overwrite_delete, trees_are_separate,
            scan_orders_bytes_both_ways, scan_respects_limit, scan_bounds, prefix_scan,
            batch_spans_trees_and_applies_in_order, failed_batch_leaves_nothing,
            unknown_tree_is_an_error, large_values_and_empty_values, many_keys_in_one_batch,
            get_many_answers_in_order, a_batch_keeps_its_last_op_per_key);
    };
    (@each native, $make:path, $($name:ident),*) => {$(
        #[test]
        fn $name() {
            ::futures::executor::block_on(async {
                let store = $make().await;
                $crate::storage::conformance::$name(&store).await;
            });
        }
    )*};
    (@each wasm, $make:path, $($name:ident),*) => {$(
        #[::wasm_bindgen_test::wasm_bindgen_test]
        async fn $name() {
            let store = $make().await;
            $crate::storage::conformance::$name(&store).await;
        }
    )*};
}
