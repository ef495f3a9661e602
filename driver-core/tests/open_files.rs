//! A channel whose dial finds the process out of file descriptors: it raises the soft
//! open-file limit to the hard one once, as Go programs run, and the call goes
//! through; at the hard limit the call fails saying what to do.
//!
//! Its own test binary, and one test: it lowers this process's limits (the hard one
//! for good) and fills the descriptor table.

use std::time::Duration;

use dtmdriver_core::Channel;
use rlimit::Resource;
use test_support::{CapturedLogs, EchoClient, EchoServer, SayRequest, fill_descriptors};
use tonic::Code;

fn channel(server: &EchoServer) -> Channel {
    Channel::builder(&format!("direct:///{}", server.addr()))
        .connect()
        .unwrap()
}

async fn say(channel: &Channel) -> Result<String, tonic::Status> {
    let mut request = tonic::Request::new(SayRequest {
        message: "hi".into(),
    });
    request.set_timeout(Duration::from_secs(5));
    let reply = EchoClient::new(channel.clone()).say(request).await?;
    Ok(reply.into_inner().server)
}

#[tokio::test]
async fn a_dial_out_of_descriptors_raises_the_soft_limit_once_then_says_what_to_do() {
    let (logs, _guard) = CapturedLogs::capture();
    let first = EchoServer::start("first").await;
    let second = EchoServer::start("second").await;
    let (_, hard) = rlimit::getrlimit(Resource::NOFILE).unwrap();

    // The soft limit below the hard one, every descriptor under it taken: the dial
    // raises it and the call goes through.
    let to_first = channel(&first);
    let filler = fill_descriptors(false);
    let soft = rlimit::getrlimit(Resource::NOFILE).unwrap().0;
    assert_eq!(
        say(&to_first).await.expect("the call after the raise"),
        "first"
    );
    assert_eq!(rlimit::getrlimit(Resource::NOFILE).unwrap(), (hard, hard));
    let raised = format!("from={soft} to={hard}");
    assert_eq!(logs.count("WARN", &raised), 1, "{}", logs.text());
    drop(filler);

    // Soft and hard limits alike, every descriptor taken: the call fails saying what to
    // do (another server: the first one's connection is pooled, and kept open by its
    // channel so that no descriptor comes free meanwhile).
    let to_second = channel(&second);
    let _filler = fill_descriptors(true);
    let status = say(&to_second).await.expect_err("no descriptor left");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let message = status.message();
    for what in [
        "Too many open files",
        "`ulimit -n`",
        "LimitNOFILE=",
        "?subset=N",
    ] {
        assert!(message.contains(what), "{what} missing from: {message}");
    }
    assert_eq!(
        logs.count("WARN", "raised the soft open-file limit"),
        1,
        "raised once"
    );
}
