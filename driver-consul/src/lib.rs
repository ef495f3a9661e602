//! The consul registry engine (agent registration with TTL heartbeat, blocking health
//! queries) and the native `dtm-driver-consul` driver.
//!
//! This crate is a placeholder until the consul engine lands; it builds so that the
//! workspace and the `dtmdriver` CLI can already link it.
