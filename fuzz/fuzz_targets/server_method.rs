//! libFuzzer target `server_method`: the shared body `driver_fuzz::body("server_method")`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let body = driver_fuzz::body("server_method").expect("a body of driver-fuzz");
    body(data)
});
