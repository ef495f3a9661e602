//! The `default` driver: Go's rule, plus the built-in `direct://` scheme; registering
//! at a real target is refused with a message that says to pick a driver.

use dtmdriver_core::{DefaultDriver, Driver};

#[test]
fn parses_plain_and_direct_but_refuses_other_schemes() {
    let d = DefaultDriver;
    let sm = d.parse_server_method("localhost:8080/pb.S/M").unwrap();
    assert_eq!(
        (sm.server.as_str(), sm.method.as_str()),
        ("localhost:8080", "/pb.S/M")
    );
    let sm = d
        .parse_server_method("direct:///127.0.0.1:2006/pb.Wallet/DeductBalance")
        .unwrap();
    assert_eq!(sm.server, "direct:///127.0.0.1:2006");
    let err = d
        .parse_server_method("etcd://h:2379/a/pkg.S/M")
        .unwrap_err()
        .to_string();
    assert!(err.contains("use_driver"), "{err}");
}

#[tokio::test]
async fn registers_nothing_for_an_empty_target_and_refuses_a_real_one() {
    let d = DefaultDriver;
    let reg = d.register_service("", "127.0.0.1:1").await.unwrap();
    reg.deregister().await.unwrap();
    let err = d
        .register_service("etcd://127.0.0.1:2379/trans", "127.0.0.1:1")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("use_driver") && err.contains("etcd://127.0.0.1:2379/trans"),
        "{err}"
    );
}
