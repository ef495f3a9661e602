//! consul over HTTPS: a real agent serving its HTTP API on an HTTPS port with a
//! certificate from a private CA, reached with `?tls_ca=` on the target, for
//! registration (agent API) and resolution (blocking health queries) alike.

use std::path::Path;
use std::time::{Duration, Instant};

use dtmdriver_consul::ConsulDriver;
use dtmdriver_core::{Channel, Driver};
use test_support::{ConsulAgent, EchoServer, TestPki, say};

/// A private CA with a server certificate for 127.0.0.1 / localhost, a client
/// certificate (`client.pem`, `client-key.pem`) and an unrelated CA (`other-ca.pem`).
fn pki() -> TestPki {
    let pki = TestPki::new(&["localhost", "127.0.0.1"]);
    pki.issue("client", &["client"]);
    pki.write_other_ca("other-ca.pem");
    pki
}

fn start_agent(pki: &TestPki) -> ConsulAgent {
    ConsulAgent::start_with_tls(&pki.ca_pem, &pki.cert_pem, &pki.key_pem)
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// Registers through `target`, expecting a failure; its text.
async fn register_error(target: &str) -> String {
    ConsulDriver
        .register_service(target, "127.0.0.1:9")
        .await
        .map(|_| ())
        .expect_err(target)
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_resolve_over_https_with_a_private_ca() {
    let pki = pki();
    let agent = start_agent(&pki);
    let https = agent.https_addr().unwrap();
    let target = format!(
        "consul://{https}/secure?tls_ca={}",
        display(&pki.path("ca.pem"))
    );

    let echo = EchoServer::start("over-https").await;
    let registration = ConsulDriver
        .register_service(&target, &echo.addr())
        .await
        .expect("register over HTTPS");
    // The agent has it (read back over its plain HTTP port).
    let id = format!("secure@{}", echo.addr());
    let (code, body) = agent.api("GET", &format!("/v1/agent/service/{id}"), "");
    assert_eq!(code, 200, "{body}");

    let channel = Channel::builder(&target)
        .driver(&ConsulDriver)
        .unwrap()
        .connect()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while channel.status().endpoints.is_empty() {
        assert!(
            Instant::now() < deadline,
            "not resolved over HTTPS: {:?}",
            channel.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(say(&channel).await.unwrap(), "over-https");

    registration.deregister().await.unwrap();
    let (code, _) = agent.api("GET", &format!("/v1/agent/service/{id}"), "");
    assert_eq!(code, 404, "deregistered over HTTPS");
    // The watch over HTTPS sees the instance go.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !channel.status().endpoints.is_empty() {
        assert!(
            Instant::now() < deadline,
            "deregistration not seen over HTTPS: {:?}",
            channel.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_errors_name_the_problem_and_the_parameter() {
    let pki = pki();
    let agent = start_agent(&pki);
    let https = agent.https_addr().unwrap();
    let http = agent.http_addr();
    let ca = display(&pki.path("ca.pem"));

    // HTTPS without a CA: this build has no system roots, so tls_ca is asked for.
    let err = register_error(&format!("consul://{https}/s?tls=true")).await;
    assert!(err.contains("?tls_ca=FILE"), "{err}");

    // A CA that did not sign the agent's certificate: a certificate error naming
    // ?tls_ca=.
    let other = display(&pki.path("other-ca.pem"));
    let err = register_error(&format!("consul://{https}/s?tls_ca={other}")).await;
    assert!(
        err.contains("certificate") && err.contains("?tls_ca=") && err.contains("other-ca.pem"),
        "{err}"
    );

    // The same for resolution: the channel reports it and resolves nothing.
    let channel = Channel::builder(&format!("consul://{https}/s?tls_ca={other}"))
        .driver(&ConsulDriver)
        .unwrap()
        .connect()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let resolver_error = loop {
        if let Some(e) = channel.status().resolver_error {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no resolver error: {:?}",
            channel.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        resolver_error.contains("certificate") && resolver_error.contains("?tls_ca="),
        "{resolver_error}"
    );

    // A missing CA file is named.
    let missing = display(&pki.path("nope.pem"));
    let err = register_error(&format!("consul://{https}/s?tls_ca={missing}")).await;
    assert!(
        err.contains("nope.pem") && err.contains("?tls_ca="),
        "{err}"
    );

    // A name the certificate is not issued for.
    let err = register_error(&format!(
        "consul://{https}/s?tls_ca={ca}&tls_server_name=elsewhere.example"
    ))
    .await;
    assert!(
        err.contains("elsewhere.example") && err.contains("?tls_server_name="),
        "{err}"
    );

    // TLS to the plain HTTP port, and plain HTTP to the HTTPS port.
    let err = register_error(&format!("consul://{http}/s?tls_ca={ca}")).await;
    assert!(err.contains("HTTPS port"), "{err}");
    let err = register_error(&format!("consul://{https}/s")).await;
    assert!(err.contains("?tls_ca="), "{err}");

    // The right CA with the name given explicitly works.
    let registration = ConsulDriver
        .register_service(
            &format!("consul://{https}/s?tls_ca={ca}&tls_server_name=localhost"),
            "127.0.0.1:9",
        )
        .await
        .unwrap();
    registration.deregister().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_for_an_agent_that_verifies_clients() {
    let pki = pki();
    let agent = ConsulAgent::start_with_tls_client_auth(&pki.ca_pem, &pki.cert_pem, &pki.key_pem);
    let https = agent.https_addr().unwrap();
    let ca = display(&pki.path("ca.pem"));

    // The agent's refusal (TLS 1.3: after the handshake) reaches the client as an
    // alert or, when its close wins the race with the request, as a connection ended
    // before any answer (seen once in CI); both name the parameters. Twenty tries, each
    // on a new connection, to meet both.
    for _ in 0..20 {
        let err = register_error(&format!("consul://{https}/s?tls_ca={ca}")).await;
        assert!(err.contains("?tls_cert=FILE&tls_key=FILE"), "{err}");
    }

    let target = format!(
        "consul://{https}/s?tls_ca={ca}&tls_cert={}&tls_key={}",
        display(&pki.path("client.pem")),
        display(&pki.path("client-key.pem"))
    );
    let registration = ConsulDriver
        .register_service(&target, "127.0.0.1:9")
        .await
        .expect("register with a client certificate");
    let (code, body) = agent.api("GET", "/v1/agent/service/s@127.0.0.1:9", "");
    assert_eq!(code, 200, "{body}");
    registration.deregister().await.unwrap();
}
