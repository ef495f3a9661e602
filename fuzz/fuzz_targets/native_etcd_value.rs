//! libFuzzer target `native_etcd_value`: the shared body `driver_fuzz::body("native_etcd_value")`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let body = driver_fuzz::body("native_etcd_value").expect("a body of driver-fuzz");
    body(data)
});
