//! The endpoint table in service, and applying a resolver snapshot to it.
//!
//! Contract: a snapshot's endpoints become the table's slots in the snapshot's order;
//! an address already in service keeps its connection (and its load numbers), one new
//! to the channel takes the process-wide pooled connection for that address; an
//! endpoint whose weight or metadata changed gets a fresh slot on the same connection;
//! a resolver error keeps the last set in service; "nothing resolved yet" stays
//! unresolved. Calls read the table without a lock (an `ArcSwap`), so applying never
//! blocks a call.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use http::uri::Authority;

use super::channel::ChannelInner;
use super::transport::connection::Connection;
use crate::resolve::{Endpoint, ResolverState};

pub(super) struct Slot {
    pub(super) endpoint: Endpoint,
    /// The endpoint's address parsed once for request URIs; `None` if it is not a
    /// valid authority (calls picking it then fail `INTERNAL` saying so).
    pub(super) authority: Option<Authority>,
    pub(super) conn: Arc<Connection>,
    /// Smooth-WRR running weight.
    pub(super) wrr_current: AtomicI64,
}

pub(super) struct Table {
    pub(super) resolved: bool,
    pub(super) last_error: Option<String>,
    pub(super) slots: Vec<Arc<Slot>>,
}

impl ChannelInner {
    /// Applies a resolver snapshot: diff into slots, reuse connections by address.
    pub(super) fn apply(&self, state: &ResolverState) {
        let old = self.table();
        let Some(endpoints) = &state.endpoints else {
            if state.last_error != old.last_error {
                self.publish(Table {
                    resolved: false,
                    last_error: state.last_error.clone(),
                    slots: Vec::new(),
                });
            }
            return;
        };
        let mut slots = Vec::with_capacity(endpoints.len());
        for ep in endpoints.iter() {
            let existing = old.slots.iter().find(|s| s.endpoint.addr == ep.addr);
            let slot = match existing {
                Some(s) if s.endpoint == *ep => s.clone(),
                Some(s) => Arc::new(Slot {
                    endpoint: ep.clone(),
                    authority: s.authority.clone(),
                    conn: s.conn.clone(),
                    wrr_current: AtomicI64::new(0),
                }),
                None => {
                    tracing::info!(target = %self.target, addr = %ep.addr, weight = ep.weight, "endpoint added");
                    Arc::new(Slot {
                        endpoint: ep.clone(),
                        authority: ep.addr.parse().ok(),
                        conn: Connection::pooled(&ep.addr, &self.dial),
                        wrr_current: AtomicI64::new(0),
                    })
                }
            };
            slots.push(slot);
        }
        for gone in old
            .slots
            .iter()
            .filter(|s| !endpoints.iter().any(|e| e.addr == s.endpoint.addr))
        {
            tracing::info!(target = %self.target, addr = %gone.endpoint.addr, "endpoint removed");
        }
        if let Some(err) = &state.last_error {
            tracing::warn!(target = %self.target, error = %err, endpoints = slots.len(),
                "resolver error; keeping the last endpoint set");
        }
        self.publish(Table {
            resolved: true,
            last_error: state.last_error.clone(),
            slots,
        });
        // Dial new endpoints now if the channel is in use, so changes apply without
        // traffic; an unused channel stays lazy.
        if self.active.load(Ordering::SeqCst) {
            self.start_all();
        }
    }
}
