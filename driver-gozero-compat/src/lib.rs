//! `dtm-driver-gozero`: go-zero's registry formats on the etcd and consul engines.
//!
//! This crate is a placeholder until the etcd engine lands.
