//! Runnable examples of the dtm drivers. The library part holds pieces the example
//! programs and their tests share.

pub mod custom_driver;
pub mod dtm;
