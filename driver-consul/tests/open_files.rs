//! A consul request that finds the process out of file descriptors raises the soft
//! open-file limit to the hard one (once per process, shared with the channel's dial:
//! `dtmdriver_core::open_files`), says so in its error, and the next try connects.
//!
//! Its own test binary: it lowers this process's soft limit and fills the descriptor
//! table.

use dtmdriver_consul::ConsulDriver;
use dtmdriver_core::Driver;
use rlimit::Resource;
use test_support::{ConsulAgent, fill_descriptors};

#[tokio::test]
async fn a_request_out_of_descriptors_raises_the_soft_limit_and_the_next_try_connects() {
    let agent = ConsulAgent::start();
    let target = format!("consul://{}/fd-starved", agent.http_addr());
    let (_, hard) = rlimit::getrlimit(Resource::NOFILE).unwrap();

    // The soft limit a few descriptors above those open, every one of them taken.
    let _filler = fill_descriptors(false);

    let error = ConsulDriver
        .register_service(&target, "127.0.0.1:9")
        .await
        .expect_err("no descriptor for the agent's connection")
        .to_string();
    for what in [
        "Too many open files",
        "raised the soft open-file limit, retrying",
    ] {
        assert!(error.contains(what), "{what} missing from: {error}");
    }
    assert_eq!(rlimit::getrlimit(Resource::NOFILE).unwrap(), (hard, hard));

    let registration = ConsulDriver
        .register_service(&target, "127.0.0.1:9")
        .await
        .expect("the next try, under the raised limit");
    registration.deregister().await.unwrap();
}
