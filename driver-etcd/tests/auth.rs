//! Registrations against an etcd with authentication on: the client's token dies when
//! etcd restarts and after `--auth-token-ttl`; registrations must survive both, a key
//! deleted by hand must come back, and deregistering must remove the key at once.

use std::time::{Duration, Instant};

use dtmdriver_core::{Driver, Registration, RegistrationState};
use dtmdriver_etcd::{
    EtcdConfig, EtcdDriver, LeaseKeeper, PrefixState, PrefixWatcher, shared_client,
};
use etcd_client::{Client, ConnectOptions};
use test_support::{EtcdServer, wait_for};

const PASSWORD: &str = "s3cret";
/// The lease TTL of the registrations: short, so a lease left unrenewed expires (and a
/// test without the fix fails) within seconds.
const LEASE_TTL: Duration = Duration::from_secs(2);
/// etcd's `--auth-token-ttl` for the expiry tests.
const TOKEN_TTL: Duration = Duration::from_secs(2);
/// How long after etcd is back (or the key was deleted) the key must be in place.
const BACK_WITHIN: Duration = Duration::from_secs(2);

/// A client of the test's own, logged in as root, refreshing its token.
async fn admin(server: &EtcdServer) -> Client {
    let options = ConnectOptions::new()
        .with_user(EtcdServer::ROOT_USER, PASSWORD)
        .with_auto_token_refresh(true);
    tokio::time::timeout(
        Duration::from_secs(5),
        Client::connect([server.endpoint()], Some(options)),
    )
    .await
    .expect("connect timed out")
    .expect("connect as root")
}

async fn present(admin: &Client, key: &str) -> bool {
    let mut kv = admin.kv_client();
    match tokio::time::timeout(Duration::from_secs(1), kv.get(key, None)).await {
        Ok(Ok(resp)) => !resp.kvs().is_empty(),
        _ => false,
    }
}

async fn delete(admin: &Client, key: &str) {
    let mut kv = admin.kv_client();
    let resp = tokio::time::timeout(Duration::from_secs(3), kv.delete(key, None))
        .await
        .expect("delete timed out")
        .expect("delete");
    assert_eq!(resp.deleted(), 1, "{key} was not there to delete");
}

/// Registers `key` (value: an address) as root, lease TTL [`LEASE_TTL`].
async fn register(server: &EtcdServer, key: &str) -> Registration {
    let config = EtcdConfig::new([server.endpoint()]).with_user(EtcdServer::ROOT_USER, PASSWORD);
    let client = shared_client(&config).await.expect("client");
    let key = key.to_string();
    LeaseKeeper::new(client, move |_| key.clone(), "127.0.0.1:7001")
        .ttl(LEASE_TTL)
        .start(
            &format!("etcd://{}/svc", server.endpoint()),
            "127.0.0.1:7001",
        )
        .await
        .expect("register")
}

async fn wait_state(
    registration: &Registration,
    what: &str,
    within: Duration,
    want: impl Fn(&RegistrationState) -> bool,
) -> Duration {
    let mut rx = registration.watch_health();
    let start = Instant::now();
    tokio::time::timeout(within, rx.wait_for(|s| want(s)))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the registration was not {what} within {within:?}: {:?}",
                registration.health()
            )
        })
        .expect("state sender gone");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_survives_an_etcd_restart_and_says_so() {
    let mut server = EtcdServer::start_with_auth(PASSWORD, None);
    let admin = admin(&server).await;
    let registration = register(&server, "svc/a").await;
    assert!(present(&admin, "svc/a").await);
    assert_eq!(registration.health(), RegistrationState::Live);
    // Past etcd's backend commit interval (100 ms): killed sooner, etcd replays the
    // login from its log on restart and the old token stays valid.
    tokio::time::sleep(Duration::from_secs(1)).await;

    server.kill();
    let noticed = wait_state(&registration, "retrying", Duration::from_secs(5), |s| {
        matches!(s, RegistrationState::Retrying { .. })
    })
    .await;
    let RegistrationState::Retrying { error, .. } = registration.health() else {
        unreachable!()
    };
    assert!(error.contains("etcd"), "{error}");
    assert!(!error.contains(PASSWORD), "{error}");

    server.restart(); // the same data dir: the lease survives, the token does not
    let live = wait_state(&registration, "live again", BACK_WITHIN, |s| s.is_live()).await;
    let back = wait_for("the key back", BACK_WITHIN, || present(&admin, "svc/a")).await;
    eprintln!(
        "etcd restart: retrying after {noticed:?}; live {live:?} and key present {back:?} after etcd was healthy"
    );

    // Still renewed well past the lease TTL, and still guarded: a deleted key comes back.
    tokio::time::sleep(3 * LEASE_TTL).await;
    assert!(
        present(&admin, "svc/a").await,
        "the key expired after the restart"
    );
    delete(&admin, "svc/a").await;
    let reput = wait_for("the deleted key back", BACK_WITHIN, || {
        present(&admin, "svc/a")
    })
    .await;
    eprintln!("etcd restart: a deleted key was back after {reput:?}");
    assert!(registration.health().is_live());

    let mut state = registration.watch_health();
    registration.deregister().await.expect("deregister");
    assert!(!present(&admin, "svc/a").await);
    assert_eq!(*state.borrow_and_update(), RegistrationState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_after_the_token_expired_is_put_back() {
    let server = EtcdServer::start_with_auth(PASSWORD, Some(TOKEN_TTL));
    let admin = admin(&server).await;
    let registration = register(&server, "svc/b").await;
    // The keep-alive stream needs no token: only the next write finds it expired.
    tokio::time::sleep(2 * TOKEN_TTL + Duration::from_millis(500)).await;
    assert!(present(&admin, "svc/b").await);
    delete(&admin, "svc/b").await;
    let back = wait_for("the deleted key back", BACK_WITHIN, || {
        present(&admin, "svc/b")
    })
    .await;
    eprintln!("token expiry: a deleted key was back after {back:?}");
    // And it stays: the lease is still renewed.
    tokio::time::sleep(2 * LEASE_TTL).await;
    assert!(present(&admin, "svc/b").await, "the key expired");
    assert!(
        registration.health().is_live(),
        "{:?}",
        registration.health()
    );
    registration.deregister().await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistering_after_the_token_expired_removes_the_key_at_once() {
    let server = EtcdServer::start_with_auth(PASSWORD, Some(TOKEN_TTL));
    let admin = admin(&server).await;
    let deregistered = register(&server, "svc/c").await;
    let dropped = register(&server, "svc/d").await;
    tokio::time::sleep(2 * TOKEN_TTL + Duration::from_millis(500)).await;

    let start = Instant::now();
    deregistered
        .deregister()
        .await
        .expect("deregister after token expiry");
    let took = start.elapsed();
    assert!(!present(&admin, "svc/c").await, "the key lingers");
    drop(dropped);
    let gone = wait_for(
        "the dropped registration's key gone",
        Duration::from_secs(1),
        || async { !present(&admin, "svc/d").await },
    )
    .await;
    eprintln!(
        "token expiry: deregister took {took:?}; a dropped registration's key was gone after {gone:?}"
    );
}

#[tokio::test]
async fn registering_without_credentials_says_to_give_them() {
    let server = EtcdServer::start_with_auth(PASSWORD, None);
    let err = EtcdDriver
        .register_service(
            &format!("etcd://{}/svc", server.endpoint()),
            "127.0.0.1:7001",
        )
        .await
        .expect_err("registered without credentials")
        .to_string();
    assert!(err.contains("USER:PASSWORD@"), "{err}");
    assert!(!err.contains("is etcd running"), "{err}");

    let err = EtcdDriver
        .register_service(
            &format!("etcd://root:wrong@{}/svc", server.endpoint()),
            "127.0.0.1:7001",
        )
        .await
        .expect_err("registered with a wrong password")
        .to_string();
    assert!(err.contains("check both"), "{err}");
    assert!(!err.contains("wrong"), "{err}");

    // With them, the native driver registers.
    let registration = EtcdDriver
        .register_service(
            &format!("etcd://root:{PASSWORD}@{}/svc", server.endpoint()),
            "127.0.0.1:7001",
        )
        .await
        .expect("register with credentials");
    assert!(registration.health().is_live());
    registration.deregister().await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_follows_changes_after_an_etcd_restart() {
    let mut server = EtcdServer::start_with_auth(PASSWORD, None);
    let admin = admin(&server).await;
    let config = EtcdConfig::new([server.endpoint()]).with_user(EtcdServer::ROOT_USER, PASSWORD);
    let watcher = PrefixWatcher::subscribe(&config, "svc/");
    let mut rx = watcher.receiver();
    let sees = |rx: &mut tokio::sync::watch::Receiver<PrefixState>, key: &'static str| {
        let mut rx = rx.clone();
        async move {
            let found = rx.wait_for(|s| s.entries.as_ref().is_some_and(|e| e.contains_key(key)));
            tokio::time::timeout(BACK_WITHIN, found).await.is_ok()
        }
    };
    let mut kv = admin.kv_client();
    kv.put("svc/1", "127.0.0.1:7001", None).await.expect("put");
    assert!(sees(&mut rx, "svc/1").await, "the watcher missed svc/1");
    tokio::time::sleep(Duration::from_secs(1)).await; // past etcd's backend commit
    server.kill();
    server.restart();
    kv.put("svc/2", "127.0.0.1:7002", None)
        .await
        .expect("put after restart");
    let start = Instant::now();
    assert!(
        sees(&mut rx, "svc/2").await,
        "the watcher missed a change after etcd restarted: {:?}",
        rx.borrow().error
    );
    eprintln!(
        "etcd restart: the watcher saw a change after {:?}",
        start.elapsed()
    );
}
