//! Generates the echo service (proto/echo.proto) for the in-process test servers.
#![allow(clippy::print_stdout)] // cargo reads build-script directives from stdout
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/echo.proto");
    tonic_prost_build::configure().compile_protos(&["../proto/echo.proto"], &["../proto"])?;
    Ok(())
}
