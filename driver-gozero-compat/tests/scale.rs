//! A large set under a watching channel: nothing lost on the way (issue #12).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dtmdriver_core::use_driver;
use dtmdriver_gozero as _;
use etcd_client::{Client, GetOptions, Txn, TxnOp};
use test_support::{EtcdServer, addrs, synthetic_addr as addr};

const INSTANCES: usize = 10_000;
const LEFT: usize = 10;
/// Deletions in flight at once, so that events arrive in bursts as well as alone.
const DELETERS: usize = 8;

/// What etcd holds under `key/` now: the set of values.
async fn etcd_set(client: &mut Client, key: &str) -> BTreeSet<String> {
    let listing = client
        .get(format!("{key}/"), Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    listing
        .kvs()
        .iter()
        .map(|kv| kv.value_str().expect("utf-8").to_string())
        .collect()
}

async fn wait_for_set(channel: &dtmdriver_core::Channel, expect: &BTreeSet<String>, what: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let set = addrs(channel);
        if set == *expect {
            return;
        }
        assert!(
            Instant::now() < until,
            "{what}: after 30 s the channel holds {} endpoints, etcd {} ({} missing, {} extra)",
            set.len(),
            expect.len(),
            expect.difference(&set).count(),
            set.difference(expect).count(),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_instances_removed_one_by_one_end_with_the_exact_set_etcd_holds() {
    let etcd = EtcdServer::start();
    let mut client = Client::connect([etcd.endpoint()], None)
        .await
        .expect("etcd client");
    let key = "many.rpc";
    use_driver("dtm-driver-gozero").expect("driver linked");
    let channel =
        dtmdriver_core::connect(&format!("etcd://{}/{key}?subset=0", etcd.endpoint())).unwrap();

    // Registered in batches while the channel already watches.
    for batch in (0..INSTANCES).collect::<Vec<_>>().chunks(128) {
        let ops: Vec<TxnOp> = batch
            .iter()
            .map(|&i| TxnOp::put(format!("{key}/{i}"), addr(i), None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await.expect("txn");
    }
    let all = etcd_set(&mut client, key).await;
    assert_eq!(all.len(), INSTANCES);
    wait_for_set(&channel, &all, "all registered").await;

    // Removed one by one in a scattered order (7919 is prime to 10,000, so i·7919 mod
    // 10,000 visits every instance once), several deletions in flight at a time.
    let order: Vec<usize> = (0..INSTANCES - LEFT)
        .map(|i| i * 7919 % INSTANCES)
        .collect();
    let mut deleters = Vec::new();
    for part in order.chunks(order.len().div_ceil(DELETERS)) {
        let mut client = client.clone();
        let part = part.to_vec();
        deleters.push(tokio::spawn(async move {
            for i in part {
                client
                    .delete(format!("{key}/{i}"), None)
                    .await
                    .expect("delete");
            }
        }));
    }
    for deleter in deleters {
        deleter.await.expect("deleter");
    }
    let left = etcd_set(&mut client, key).await;
    assert_eq!(left.len(), LEFT, "etcd holds what was not deleted");
    wait_for_set(&channel, &left, "after the removals").await;
    // And it stays so (past the engine's grace period for an emptied set).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(addrs(&channel), left);
}
