//! In-memory backend: one `BTreeMap` per tree. Used natively by tests and `hearth-testhost`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use super::{Batch, Direction, Durable, KeyRange, Op, Storage, StorageError, StorageResult, TREES};

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug)]
pub struct MemoryStorage {
    trees: RefCell<HashMap<&'static str, Tree>>,
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self {
            trees: RefCell::new(TREES.iter().map(|t| (*t, Tree::new())).collect()),
        }
    }
}

fn check_tree(trees: &HashMap<&'static str, Tree>, tree: &str) -> StorageResult<()> {
    if trees.contains_key(tree) {
        Ok(())
    } else {
        Err(StorageError::UnknownTree(tree.to_owned()))
    }
}

#[async_trait(?Send)]
impl Storage for MemoryStorage {
    async fn get(&self, tree: &'static str, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        let trees = self.trees.borrow();
        check_tree(&trees, tree)?;
        Ok(trees[tree].get(key).cloned())
    }

    async fn scan(
        &self,
        tree: &'static str,
        range: KeyRange,
        direction: Direction,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let trees = self.trees.borrow();
        check_tree(&trees, tree)?;
        if range.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let iter = trees[tree].range::<Vec<u8>, _>((range.start.clone(), range.end.clone()));
        let clone = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        Ok(match direction {
            Direction::Forward => iter.take(limit).map(clone).collect(),
            Direction::Backward => iter.rev().take(limit).map(clone).collect(),
        })
    }

    /// Memory writes are durable at once: nothing is ever in flight.
    async fn begin_write(&self, batch: Batch) -> StorageResult<Durable> {
        self.apply(batch)?;
        Ok(Box::pin(std::future::ready(Ok(()))))
    }

    async fn size_estimate(&self) -> StorageResult<u64> {
        let trees = self.trees.borrow();
        Ok(trees
            .values()
            .flat_map(|t| t.iter())
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum())
    }
}

impl MemoryStorage {
    fn apply(&self, batch: Batch) -> StorageResult<()> {
        let mut trees = self.trees.borrow_mut();
        // Validate first so that a bad batch leaves nothing behind.
        for op in &batch.ops {
            let (Op::Put { tree, .. } | Op::Delete { tree, .. }) = op;
            check_tree(&trees, tree)?;
        }
        for op in batch.ops {
            match op {
                Op::Put { tree, key, value } => {
                    trees.get_mut(tree).map(|t| t.insert(key, value));
                }
                Op::Delete { tree, key } => {
                    trees.get_mut(tree).map(|t| t.remove(&key));
                }
            }
        }
        Ok(())
    }
}
