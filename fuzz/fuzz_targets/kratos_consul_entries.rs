//! libFuzzer target `kratos_consul_entries`: the shared body `driver_fuzz::body("kratos_consul_entries")`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let body = driver_fuzz::body("kratos_consul_entries").expect("a body of driver-fuzz");
    body(data)
});
