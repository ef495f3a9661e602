//! Echo calls through a [`driver_core::Channel`] and what a channel holds: the two
//! things nearly every channel test asks.

use std::collections::BTreeSet;
use std::time::Duration;

use driver_core::Channel;

use crate::{EchoClient, SayRequest};

/// How long [`say`] lets a call run before failing it as hung.
pub const CALL_BOUND: Duration = Duration::from_secs(20);

/// One echo call through `channel`: the name of the server that answered.
///
/// # Panics
///
/// Panics if the call hangs for [`CALL_BOUND`]: no channel call may hang, and a hang
/// must fail the test (never pass as an expected error) instead of stalling the suite.
pub async fn say(channel: &Channel) -> Result<String, tonic::Status> {
    let mut client = EchoClient::new(channel.clone());
    let call = client.say(SayRequest {
        message: "hi".into(),
    });
    match tokio::time::timeout(CALL_BOUND, call).await {
        Ok(reply) => reply.map(|r| r.into_inner().server),
        Err(_) => panic!(
            "a call through `{}` hung for {CALL_BOUND:?}",
            channel.target()
        ),
    }
}

/// The endpoint addresses `channel` holds now.
pub fn addrs(channel: &Channel) -> BTreeSet<String> {
    channel
        .status()
        .endpoints
        .into_iter()
        .map(|e| e.endpoint.addr)
        .collect()
}
