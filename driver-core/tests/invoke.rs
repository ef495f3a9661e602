//! Dynamic invoke: a branch URI, raw request bytes and metadata in, raw reply bytes out,
//! against a real tonic server.

use bytes::Bytes;
use prost::Message;
use test_support::{Behavior, EchoServer, SayReply, SayRequest};

#[tokio::test]
async fn invoke_sends_raw_bytes_and_metadata_and_returns_raw_reply() {
    let server = EchoServer::start("invoke-echo").await;
    let payload = SayRequest {
        message: "transfer 30".into(),
    }
    .encode_to_vec();

    // The default driver's plain form, and the built-in direct:// scheme.
    for uri in [
        format!("{}/echo.Echo/Say", server.addr()),
        format!("direct:///{}/echo.Echo/Say", server.addr()),
    ] {
        let reply = dtmdriver_core::invoke(
            &uri,
            Bytes::from(payload.clone()),
            &[("dtm-gid", "gid-42"), ("dtm-branch_id", "01")],
        )
        .await
        .unwrap_or_else(|s| panic!("{uri}: {s}"));
        let reply = SayReply::decode(reply).unwrap();
        assert_eq!(reply.message, "transfer 30");
        assert_eq!(reply.server, "invoke-echo");
        let md = server.last_metadata();
        assert!(md.contains(&("dtm-gid".into(), "gid-42".into())), "{md:?}");
        assert!(
            md.contains(&("dtm-branch_id".into(), "01".into())),
            "{md:?}"
        );
    }
}

#[tokio::test]
async fn invoke_returns_the_servers_status() {
    let server = EchoServer::start("aborting-echo").await;
    server.set_behavior(Behavior {
        fail: Some(tonic::Code::Aborted),
        ..Behavior::default()
    });
    let status = dtmdriver_core::invoke(
        &format!("{}/echo.Echo/Say", server.addr()),
        Bytes::new(),
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Aborted, "{status}");
    assert!(status.message().contains("aborting-echo"), "{status}");
}

#[tokio::test]
async fn invoke_reports_bad_uris_and_methods_clearly() {
    let status = dtmdriver_core::invoke("no-slash-here", Bytes::new(), &[])
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("no-slash-here"), "{status}");

    let status = dtmdriver_core::invoke("etcd://127.0.0.1:2379/trans/pb.S/M", Bytes::new(), &[])
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("use_driver"), "{status}");

    // A method the server does not have: gRPC's UNIMPLEMENTED, not a hang.
    let server = EchoServer::start("echo").await;
    let status = dtmdriver_core::invoke(
        &format!("{}/echo.Echo/Shout", server.addr()),
        Bytes::new(),
        &[],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status}");
}
