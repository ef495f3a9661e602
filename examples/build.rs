//! Generates the dtm example protos: our busi service and dtm's gRPC API.
#![allow(clippy::print_stdout)] // cargo reads build-script directives from stdout
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/busi.proto");
    println!("cargo:rerun-if-changed=proto/dtmgimp.proto");
    tonic_prost_build::configure()
        .compile_protos(&["proto/busi.proto", "proto/dtmgimp.proto"], &["proto"])?;
    Ok(())
}
