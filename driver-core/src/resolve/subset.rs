//! [`Subset`]: the sticky random subset a [`SnapshotSender`](super::SnapshotSender)
//! publishes when it is given a limit (go-zero's clients keep at most 32 servers).
//!
//! Contract: at most `limit` addresses are chosen; a chosen address stays while it is
//! in the set; a place that frees up is filled at random from the others, so a change
//! elsewhere in a large set changes nothing published. Cost: O(1) a change (the pool
//! of unchosen endpoints is a vector with an index of positions).

use std::collections::{HashMap, HashSet};

use rand::Rng;

use super::set::SetChange;
use super::{Endpoint, Fast};

/// A sticky random subset of at most `limit` addresses: the chosen ones stay while
/// they are in the set; a place that frees up is filled at random from the `pool` of
/// the others.
#[derive(Debug)]
pub(super) struct Subset {
    limit: usize,
    chosen: HashSet<Box<str>, Fast>,
    pool: Vec<Endpoint>,
    /// Where each pool address is in `pool`.
    in_pool: HashMap<Box<str>, usize, Fast>,
}

impl Subset {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit,
            chosen: HashSet::default(),
            pool: Vec::new(),
            in_pool: HashMap::default(),
        }
    }

    fn pool_remove(&mut self, addr: &str) -> Option<Endpoint> {
        let at = self.in_pool.remove(addr)?;
        let taken = self.pool.swap_remove(at);
        if let Some(moved) = self.pool.get(at) {
            self.in_pool.insert(moved.addr.as_str().into(), at);
        }
        Some(taken)
    }

    /// Turns changes of the whole set into changes of the subset.
    pub(super) fn pass(&mut self, changes: Vec<SetChange>) -> Vec<SetChange> {
        let mut out = Vec::new();
        for change in changes {
            match change {
                SetChange::Put(endpoint) => {
                    if self.chosen.contains(endpoint.addr.as_str()) {
                        out.push(SetChange::Put(endpoint));
                    } else if let Some(&at) = self.in_pool.get(endpoint.addr.as_str()) {
                        self.pool[at] = endpoint;
                    } else {
                        self.in_pool
                            .insert(endpoint.addr.as_str().into(), self.pool.len());
                        self.pool.push(endpoint);
                    }
                }
                SetChange::Remove(addr) => {
                    if self.chosen.remove(addr.as_str()) {
                        out.push(SetChange::Remove(addr));
                    } else {
                        self.pool_remove(&addr);
                    }
                }
            }
        }
        let mut rng = rand::rng();
        while self.chosen.len() < self.limit && !self.pool.is_empty() {
            let at = rng.random_range(0..self.pool.len());
            let addr = self.pool[at].addr.clone();
            if let Some(endpoint) = self.pool_remove(&addr) {
                self.chosen.insert(addr.into());
                out.push(SetChange::Put(endpoint));
            }
        }
        out
    }
}
