//! The etcd registry engine (session, lease keeper, prefix watcher) and the native
//! `dtm-driver-etcd` driver.
//!
//! This crate is a placeholder until the etcd engine lands; it builds so that the
//! workspace and the `dtmdriver` CLI can already link it.
