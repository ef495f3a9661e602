//! `dtmdriver_core::discover` over the consul engine (native driver) against a real, private
//! consul: the change stream and the feeder for tonic's balance channel.

use dtmdriver_consul::ConsulDriver;
use test_support::ConsulAgent;
use test_support::discover::{
    changes_arrive_in_order, tonic_feeder_keeps_the_set_current_while_idle,
};

#[tokio::test]
async fn adds_weight_changes_and_removals_arrive_in_order() {
    let consul = ConsulAgent::start();
    changes_arrive_in_order(
        &format!("consul://{}/svc", consul.http_addr()),
        &ConsulDriver,
    )
    .await;
}

#[tokio::test]
async fn tonic_feeder_keeps_the_balance_channel_current_while_idle() {
    let consul = ConsulAgent::start();
    let took = tonic_feeder_keeps_the_set_current_while_idle(
        &format!("consul://{}/svc", consul.http_addr()),
        &ConsulDriver,
    )
    .await;
    eprintln!("consul: an add and a removal reached tonic's idle queue in {took:?}");
}
