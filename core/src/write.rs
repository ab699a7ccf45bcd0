//! The write path's ordering: one writer at a time prepares a batch under the write lock, and
//! a batch can be handed to storage ("issued") before it is durable, so that the next writer
//! prepares its batch while storage commits this one.
//!
//! Everything a writer reads while an earlier batch is in flight already reflects that batch
//! (storage promises it for reads, and the caches are updated when a batch is issued). So when
//! a batch in flight fails, whatever was prepared on top of it must fail too:
//! - storage refuses a batch issued while a failed one was still in flight;
//! - [`Homeserver::issue`] refuses a batch whose writer took the lock before a failure that
//!   it learned of only later (`failed_writes` moved while it held the lock).

use std::cell::Cell;

use futures::lock::MutexGuard;

use crate::Homeserver;
use crate::error::{MatrixError, Result};
use crate::storage::{Batch, Durable};

/// The write lock, held. Remembers how many batches had failed when it was taken.
pub struct WriteGuard<'a> {
    _guard: MutexGuard<'a, ()>,
    holder: &'a Cell<Option<u64>>,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.holder.set(None);
    }
}

/// A batch handed to storage: every later read and write sees it. [`Issued::durable`] says
/// whether it became durable; until then nothing of it may be acknowledged to anyone.
#[must_use = "an issued batch is not durable until `durable` says so"]
pub struct Issued {
    hs: Homeserver,
    /// The last stream position the batch covers.
    pos: u64,
    durable: Durable,
}

impl Issued {
    /// Waits for the batch to be durable, then makes its stream positions visible and wakes
    /// `/sync`. When it failed, the caches (which were updated when it was issued) are
    /// dropped, and writers already preparing on top of it will be refused.
    pub async fn durable(self) -> Result<()> {
        let hs = self.hs;
        match self.durable.await {
            Ok(()) => {
                if self.pos > hs.visible_pos.get() {
                    hs.visible_pos.set(self.pos);
                }
                hs.notifier.notify();
                Ok(())
            }
            Err(e) => {
                hs.failed_write();
                Err(e.into())
            }
        }
    }
}

impl Homeserver {
    /// Takes the write lock. Hold it across read-modify-write of shared state and across
    /// [`Homeserver::alloc_pos`] .. [`Homeserver::commit`] (or [`Homeserver::issue`]).
    pub async fn write_lock(&self) -> WriteGuard<'_> {
        let guard = self.write_lock.lock().await;
        self.lock_taken_at.set(Some(self.failed_writes.get()));
        WriteGuard {
            _guard: guard,
            holder: &self.lock_taken_at,
        }
    }

    /// Writes `batch` atomically together with the stream position, then makes everything up
    /// to the last allocated position visible and wakes `/sync` waiters. Call with the write
    /// lock held. On failure the positions handed out are not reused, which is harmless:
    /// positions only need to grow.
    pub async fn commit(&self, batch: Batch) -> Result<()> {
        self.issue(batch).await?.durable().await
    }

    /// [`Homeserver::commit`] up to the point where storage has the batch: from here on,
    /// every read sees it, and the caller may release the write lock before awaiting
    /// [`Issued::durable`]. Call with the write lock held; publish what the batch changes to
    /// the caches before releasing it.
    pub async fn issue(&self, mut batch: Batch) -> Result<Issued> {
        if let Some(taken_at) = self.lock_taken_at.get()
            && taken_at != self.failed_writes.get()
        {
            self.caches.clear();
            return Err(MatrixError::unavailable(
                "an earlier write failed while this one was being prepared; try again",
            ));
        }
        let pos = self.next_pos.get();
        batch.put("meta", crate::META_STREAM_POS, pos.to_be_bytes().to_vec());
        let touched = crate::db::Touched::of(&batch);
        match self.store.begin_write(batch).await {
            Ok(durable) => {
                self.caches.committed(touched);
                Ok(Issued {
                    hs: self.clone(),
                    pos,
                    durable,
                })
            }
            Err(e) => {
                self.failed_write();
                Err(e.into())
            }
        }
    }

    fn failed_write(&self) {
        self.caches.clear();
        // Rooms noted as behind when their write was issued may have lost that note.
        self.search.note_all();
        self.failed_writes.set(self.failed_writes.get() + 1);
    }
}
