//! What a busy room leaves in storage: a room of N members that M messages are sent into,
//! and the stored bytes (key + value) per tree. The notification-storage test
//! (`core/tests/api/notification_footprint.rs`), the heap benchmark
//! (`bench/benches/notification_memory.rs`) and the IndexedDB test
//! (`web/tests/notification_footprint.rs`) share it, so the three measure the same thing.

use std::ops::Bound;

use serde_json::json;

use super::{TestClient, enc};
use crate::Homeserver;
use crate::storage::{Direction, KeyRange, Storage, StorageResult, TREES};

/// Records and their key + value bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bytes {
    pub records: u64,
    pub bytes: u64,
}

/// Stored records and bytes of every tree.
#[derive(Debug, Clone, Default)]
pub struct Footprint {
    pub trees: Vec<(&'static str, Bytes)>,
}

impl Footprint {
    /// Reads every tree of `store` in chunks and adds up its keys and values.
    pub async fn of<S: Storage + ?Sized>(store: &S) -> StorageResult<Self> {
        const CHUNK: usize = 4096;
        let mut trees = Vec::with_capacity(TREES.len());
        for tree in TREES {
            let mut sum = Bytes::default();
            let mut start = Bound::Unbounded;
            loop {
                let rows = store
                    .scan(
                        tree,
                        KeyRange::new(start, Bound::Unbounded),
                        Direction::Forward,
                        CHUNK,
                    )
                    .await?;
                for (k, v) in &rows {
                    sum.records += 1;
                    sum.bytes += (k.len() + v.len()) as u64;
                }
                match rows.last() {
                    Some((k, _)) if rows.len() == CHUNK => start = Bound::Excluded(k.clone()),
                    _ => break,
                }
            }
            trees.push((*tree, sum));
        }
        Ok(Self { trees })
    }

    pub fn tree(&self, name: &str) -> Bytes {
        self.trees
            .iter()
            .find(|(t, _)| *t == name)
            .map(|(_, b)| *b)
            .unwrap_or_default()
    }

    pub fn total(&self) -> Bytes {
        self.trees.iter().fold(Bytes::default(), |a, (_, b)| Bytes {
            records: a.records + b.records,
            bytes: a.bytes + b.bytes,
        })
    }

    /// What was added since `earlier` (trees only grow in these scenarios).
    pub fn since(&self, earlier: &Footprint) -> Footprint {
        Footprint {
            trees: self
                .trees
                .iter()
                .map(|(t, b)| {
                    let e = earlier.tree(t);
                    (
                        *t,
                        Bytes {
                            records: b.records.saturating_sub(e.records),
                            bytes: b.bytes.saturating_sub(e.bytes),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// A public room whose members all joined through the API; the first member created it.
pub struct BusyRoom {
    pub room_id: String,
    pub members: Vec<TestClient>,
    sent: usize,
}

impl BusyRoom {
    /// Registers `members` users (`{label}0`, `{label}1`, ...) and has them all join one room.
    pub async fn create(hs: &Homeserver, label: &str, members: usize) -> Self {
        let mut clients = Vec::with_capacity(members);
        for i in 0..members.max(1) {
            clients.push(TestClient::register(hs, &format!("{label}{i}")).await);
        }
        let room_id = clients[0]
            .post(
                "/_matrix/client/v3/createRoom",
                json!({"preset": "public_chat"}),
            )
            .await
            .assert_ok()["room_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for c in &clients[1..] {
            c.post(
                &format!("/_matrix/client/v3/join/{}", enc(&room_id)),
                json!({}),
            )
            .await
            .assert_ok();
        }
        Self {
            room_id,
            members: clients,
            sent: 0,
        }
    }

    /// Sends `count` plain messages, the members taking turns; nobody reads them.
    pub async fn send(&mut self, count: usize) {
        for _ in 0..count {
            let n = self.sent;
            self.sent += 1;
            let sender = &self.members[n % self.members.len()];
            sender
                .put(
                    &format!(
                        "/_matrix/client/v3/rooms/{}/send/m.room.message/fp{n}",
                        enc(&self.room_id)
                    ),
                    json!({"msgtype": "m.text", "body": format!("message number {n}")}),
                )
                .await
                .assert_ok();
        }
    }
}
