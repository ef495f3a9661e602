//! libFuzzer target `host_port`: the shared body `driver_fuzz::body("host_port")`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let body = driver_fuzz::body("host_port").expect("a body of driver-fuzz");
    body(data)
});
