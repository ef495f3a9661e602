//! `dtm-driver-kratos`: kratos' registry formats on the etcd and consul engines.
//!
//! This crate is a placeholder until the etcd and consul engines land.
