//! libFuzzer target `target`: the shared body `driver_fuzz::body("target")`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let body = driver_fuzz::body("target").expect("a body of driver-fuzz");
    body(data)
});
