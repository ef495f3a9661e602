//! An HTTP gateway in front of a discovered gRPC service (the Gin + etcd + gRPC design,
//! in Rust with axum).
//!
//! Run it with `cargo run -p examples --example gateway`. It starts a private etcd and a
//! "user" service (the echo service under the go-zero key `user.rpc`, registered with
//! `dtm-driver-gozero`), then serves `POST /user/login` on a free loopback port: the
//! JSON body `{"username": …, "password": …}` becomes a gRPC call to whichever user
//! instance the channel of `etcd://…/user.rpc` picks, and the reply goes back as JSON.
//! The gateway never learns an address: instances come and go in etcd. The program
//! sends two requests to itself with hyper's client, prints the replies and exits.

#![allow(clippy::print_stdout)] // an example talks to its user

use dtmdriver_gozero as _; // links dtm-driver-gozero

use std::time::Duration;

use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::routing::post;
use bytes::Bytes;
use dtmdriver_core::Channel;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{Value, json};
use test_support::{EchoClient, EchoServer, EtcdServer, SayRequest};

/// The body of `POST /user/login`.
#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

/// `POST /user/login`: checks the form, then asks the user service.
async fn login(
    State(users): State<EchoClient<Channel>>,
    Json(form): Json<Login>,
) -> (StatusCode, Json<Value>) {
    if form.username.is_empty() || form.password.is_empty() {
        let error = json!({"error": "username and password are required"});
        return (StatusCode::BAD_REQUEST, Json(error));
    }
    let mut request = tonic::Request::new(SayRequest {
        message: format!("login {}", form.username),
    });
    request.set_timeout(Duration::from_secs(5));
    // The generated client is a cheap handle on the shared, balanced channel.
    match users.clone().say(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            let body =
                json!({"user": form.username, "reply": reply.message, "served_by": reply.server});
            (StatusCode::OK, Json(body))
        }
        // A gRPC failure becomes a gateway error that says which service failed.
        Err(status) => {
            let body = json!({"error": format!("user service: {}", status.message()), "code": format!("{:?}", status.code())});
            (StatusCode::BAD_GATEWAY, Json(body))
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd = EtcdServer::start();
    let target = format!("etcd://{}/user.rpc", etcd.endpoint());

    dtmdriver_core::use_driver("dtm-driver-gozero")?;
    let user_service = EchoServer::start("user-1").await;
    let registration = dtmdriver_core::get_driver()
        .register_service(&target, &user_service.addr())
        .await?;
    println!(
        "user service {} registered at {target}",
        user_service.addr()
    );

    // The gateway: one channel per target, shared by every request.
    let users = EchoClient::new(dtmdriver_core::connect(&target)?);
    let app = axum::Router::new()
        .route("/user/login", post(login))
        .with_state(users);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );
    println!("gateway listening on http://{addr}");

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let url = format!("http://{addr}/user/login");
    let mut ok = true;
    for (body, expected) in [
        (json!({"username": "alice", "password": "s3cret"}), 200),
        (json!({"username": "bob", "password": ""}), 400),
    ] {
        let request = hyper::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let response =
            tokio::time::timeout(Duration::from_secs(10), client.request(request)).await??;
        let status = response.status();
        let reply = response.into_body().collect().await?.to_bytes();
        println!(
            "POST /user/login {body} -> {status} {}",
            String::from_utf8_lossy(&reply)
        );
        ok &= status.as_u16() == expected;
    }

    let _ = stop.send(());
    gateway.await??;
    registration.deregister().await?;
    if !ok {
        return Err("a reply did not have the expected status".into());
    }
    Ok(())
}
