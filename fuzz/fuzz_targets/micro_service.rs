//! libFuzzer target `micro_service`: the shared body `driver_fuzz::body("micro_service")`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let body = driver_fuzz::body("micro_service").expect("a body of driver-fuzz");
    body(data)
});
