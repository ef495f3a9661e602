//! Generates the test services (proto/echo.proto, proto/streams.proto) for the
//! in-process test servers.
#![allow(clippy::print_stdout)] // cargo reads build-script directives from stdout
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/echo.proto");
    println!("cargo:rerun-if-changed=../proto/streams.proto");
    tonic_prost_build::configure().compile_protos(
        &["../proto/echo.proto", "../proto/streams.proto"],
        &["../proto"],
    )?;
    Ok(())
}
