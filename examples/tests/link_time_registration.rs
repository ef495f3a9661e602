//! Linking a driver crate is enough: this test crate never calls `register`, it only
//! keeps the crate linked with `use examples as _;` (the documented rule) and chooses
//! the driver by name, then registers, resolves and calls through it for real.

use examples as _;

use std::time::Duration;

use test_support::{EchoClient, EchoServer, SayRequest};

#[tokio::test]
async fn a_linked_driver_is_found_by_name_and_works_end_to_end() {
    assert!(
        dtmdriver_core::driver_names().contains(&"example-dir".to_string()),
        "linked drivers: {:?}",
        dtmdriver_core::driver_names()
    );
    dtmdriver_core::use_driver("example-dir").unwrap();
    let driver = dtmdriver_core::get_driver();
    assert_eq!(driver.name(), "example-dir");

    let registry = tempfile::tempdir().unwrap();
    let target = format!("dir://{}/echo", registry.path().display());
    let server = EchoServer::start("dir-echo").await;
    let registration = driver
        .register_service(&target, &server.addr())
        .await
        .unwrap();

    // The driver's resolver was installed for its scheme by use_driver.
    let channel = dtmdriver_core::connect(&target).unwrap();
    let reply = EchoClient::new(channel)
        .say(SayRequest {
            message: "hi".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.server, "dir-echo");

    // Dynamic invoke parses with the current driver.
    let sm = driver
        .parse_server_method(&format!("{target}/echo.Echo/Say"))
        .unwrap();
    assert_eq!(sm.server, target);
    assert_eq!(sm.method, "/echo.Echo/Say");

    registration.deregister().await.unwrap();
    let dir = registry.path().join("echo");
    let mut left = std::fs::read_dir(&dir).unwrap().count();
    for _ in 0..20 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = std::fs::read_dir(&dir).unwrap().count();
    }
    assert_eq!(left, 0, "deregister removes the instance file");
}
