//! etcd's database at its space quota (its `NOSPACE` alarm raised): a registration is
//! refused saying what to do, the registrations made before keep their leases, and once
//! space is freed as the message says (compact, defragment, disarm) registering works
//! again.

use std::time::Duration;

use dtmdriver_core::{Driver, RegistrationState};
use dtmdriver_etcd::EtcdDriver;
use etcd_client::{AlarmAction, AlarmOptions, AlarmType, Client, CompactionOptions, DeleteOptions};
use test_support::EtcdServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_etcd_refuses_registrations_saying_what_to_do_and_keeps_the_old_ones() {
    let server = EtcdServer::start_with_quota(1 << 20);
    let ep = server.endpoint();
    let target = format!("etcd://{ep}/full?ttl=2");
    let before = EtcdDriver
        .register_service(&target, "127.0.0.1:1")
        .await
        .unwrap();
    let mut client = tokio::time::timeout(Duration::from_secs(5), Client::connect([&ep], None))
        .await
        .expect("connect timed out")
        .expect("connect");

    // Fill the database past its 1 MiB quota.
    let filler = "x".repeat(128 << 10);
    let mut full = None;
    for n in 0..64 {
        if let Err(e) = client
            .put(format!("/filler/{n}"), filler.clone(), None)
            .await
        {
            full = Some(e.to_string());
            break;
        }
    }
    let full = full.expect("etcd took 8 MiB under a 1 MiB quota");
    assert!(full.contains("database space exceeded"), "{full}");

    let refused = EtcdDriver
        .register_service(&target, "127.0.0.1:2")
        .await
        .expect_err("a registration while etcd is full")
        .to_string();
    eprintln!("{refused}");
    for says in [
        "database space exceeded",
        "space quota",
        "etcdctl defrag",
        "alarm disarm",
    ] {
        assert!(refused.contains(says), "`{says}` not in: {refused}");
    }
    assert!(!refused.contains("is etcd running"), "{refused}");

    // Renewals are not writes: the registration from before outlives its 2 s TTL twice.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(before.health(), RegistrationState::Live);
    let key = client.get("/micro/full/127.0.0.1:1", None).await.unwrap();
    assert_eq!(key.kvs().len(), 1, "the registered key is gone");

    // Free space as the message says; then registering works again.
    let deleted = client
        .delete("/filler/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    let revision = deleted.header().unwrap().revision();
    client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    client.defragment().await.unwrap();
    // As `etcdctl alarm disarm`: each raised alarm, by the member that raised it.
    let alarms = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap();
    assert!(!alarms.alarms().is_empty(), "no alarm raised");
    for alarm in alarms.alarms() {
        let mut member = AlarmOptions::new();
        member.with_member(alarm.member_id());
        client
            .alarm(AlarmAction::Deactivate, alarm.alarm(), Some(member))
            .await
            .unwrap();
    }
    let after = EtcdDriver
        .register_service(&target, "127.0.0.1:2")
        .await
        .expect("registering after space was freed");
    after.deregister().await.unwrap();
    before.deregister().await.unwrap();
}
