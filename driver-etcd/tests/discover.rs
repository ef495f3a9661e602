//! `dtmdriver_core::discover` over the etcd engine (native driver) against a real, private
//! etcd: the change stream and the feeder for tonic's balance channel.

use dtmdriver_etcd::EtcdDriver;
use test_support::EtcdServer;
use test_support::discover::{
    changes_arrive_in_order, tonic_feeder_keeps_the_set_current_while_idle,
};

#[tokio::test]
async fn adds_weight_changes_and_removals_arrive_in_order() {
    let etcd = EtcdServer::start();
    changes_arrive_in_order(&format!("etcd://{}/svc", etcd.endpoint()), &EtcdDriver).await;
}

#[tokio::test]
async fn tonic_feeder_keeps_the_balance_channel_current_while_idle() {
    let etcd = EtcdServer::start();
    let took = tonic_feeder_keeps_the_set_current_while_idle(
        &format!("etcd://{}/svc", etcd.endpoint()),
        &EtcdDriver,
    )
    .await;
    eprintln!("etcd: an add and a removal reached tonic's idle queue in {took:?}");
}
