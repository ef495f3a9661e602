//! Runnable examples; see the `examples/` directory of this crate.
