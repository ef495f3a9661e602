//! Registry failures under load: etcd killed, frozen, a key deleted, the leader lost,
//! the consul agent restarted. Instances are in-process echo servers registered by our
//! drivers, so these exercise our engines' recovery (the registrations) and our
//! channel's (no call may fail while the registry is away).

use std::time::{Duration, Instant};

use driver_core::Driver;
use driver_gozero_compat::GoZeroDriver;
use test_support::{ConsulAgent, EchoServer, EtcdCluster, EtcdServer};

use super::{Kind, WORKERS, blocking, channel, count_keys, etcd_client, signal, until};
use crate::load::Load;
use crate::report::Row;

/// How long recovering registrations may take after the registry is back.
const RECOVERY_BOUND: Duration = Duration::from_secs(2);

async fn echo_servers(prefix: &str, n: usize) -> Vec<EchoServer> {
    let mut servers = Vec::with_capacity(n);
    for i in 0..n {
        servers.push(EchoServer::start(&format!("{prefix}{i}")).await);
    }
    servers
}

async fn register_all(
    driver: &dyn Driver,
    target: &str,
    servers: &[EchoServer],
) -> Vec<driver_core::Registration> {
    let mut registrations = Vec::with_capacity(servers.len());
    for s in servers {
        registrations.push(
            driver
                .register_service(target, &s.addr())
                .await
                .unwrap_or_else(|e| panic!("register {}: {e}", s.addr())),
        );
    }
    registrations
}

/// The verdict shared by registry scenarios: no failed call, recovery in time.
fn judge(failed: usize, recovery: Option<Duration>, bound: Duration) -> Option<String> {
    match recovery {
        _ if failed > 0 => Some(format!("{failed} calls failed")),
        None => Some("never recovered".into()),
        Some(d) if d > bound => Some(format!(
            "recovery took longer than {} ms",
            bound.as_millis()
        )),
        Some(_) => None,
    }
}

/// etcd SIGKILLed under load and restarted a second later.
pub async fn etcd_restart(kind: Kind) -> Row {
    let mut etcd = EtcdServer::start();
    let ep = etcd.endpoint();
    let client = etcd_client(std::slice::from_ref(&ep)).await;
    let driver = kind.driver();
    let target = format!("etcd://{ep}/faults");
    let servers = echo_servers("restart", 3).await;
    let _registrations = register_all(driver.as_ref(), &target, &servers).await;
    let channel = channel(&target, driver.as_ref(), 3).await;
    let prefix = kind.prefix("faults");

    let load = Load::start(&channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocking(|| etcd.kill());
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocking(|| etcd.restart());
    let recovery = until(Duration::from_secs(10), || {
        count_keys(&client, &prefix).map_eq(3)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let record = load.stop().await;
    let failed = record.failed();
    Row {
        scenario: match kind {
            Kind::GoZero => "etcd-restart",
            Kind::Kratos => "etcd-restart-kratos",
            Kind::Native => "etcd-restart-native",
        },
        driver: kind.name(),
        calls: record.calls(),
        failed,
        recovery_of: "3 keys back after etcd restart",
        recovery,
        detail: format!("etcd down 1 s; {WORKERS} callers"),
        violation: judge(failed, recovery, RECOVERY_BOUND),
        errors: record.errors,
    }
}

/// The password of the root user of the auth scenarios' etcd.
const ROOT_PASSWORD: &str = "faults-pw";

/// A client of an etcd with auth, as root, refreshing its token.
async fn authed_client(ep: &str) -> etcd_client::Client {
    let options = etcd_client::ConnectOptions::new()
        .with_user(EtcdServer::ROOT_USER, ROOT_PASSWORD)
        .with_auto_token_refresh(true);
    tokio::time::timeout(
        Duration::from_secs(5),
        etcd_client::Client::connect([ep], Some(options)),
    )
    .await
    .expect("connecting to etcd timed out")
    .expect("connect to etcd as root")
}

/// etcd with authentication restarted under load: its simple tokens die with the
/// process, so the registrations must log in again.
pub async fn etcd_auth_restart() -> Row {
    let mut etcd = blocking(|| EtcdServer::start_with_auth(ROOT_PASSWORD, None));
    let ep = etcd.endpoint();
    let target = format!(
        "etcd://{}:{ROOT_PASSWORD}@{ep}/authsvc",
        EtcdServer::ROOT_USER
    );
    let servers = echo_servers("auth", 3).await;
    let registrations = register_all(&GoZeroDriver, &target, &servers).await;
    let channel = channel(&target, &GoZeroDriver, 3).await;

    let load = Load::start(&channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocking(|| etcd.restart());
    let client = authed_client(&ep).await;
    // Past the 10 s TTL: leases granted before the restart and not kept alive since
    // would be gone by then.
    let recovery = until(Duration::from_secs(15), || async {
        registrations
            .iter()
            .all(|r| r.health() == driver_core::RegistrationState::Live)
            && count_keys(&client, "authsvc/").await == 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let kept = count_keys(&client, "authsvc/").await;
    let record = load.stop().await;
    let failed = record.failed();
    Row {
        scenario: "etcd-auth-restart",
        driver: Kind::GoZero.name(),
        calls: record.calls(),
        failed,
        recovery_of: "3 keys back and every registration Live",
        recovery,
        detail: format!("{kept} of 3 keys still there 11 s later (past the TTL)"),
        violation: judge(failed, recovery, RECOVERY_BOUND)
            .or_else(|| (kept != 3).then(|| format!("only {kept} keys outlived the TTL"))),
        errors: record.errors,
    }
}

/// etcd with authentication and a 2 s token TTL: once the tokens expired, a key deleted
/// by hand must be put back (the keeper logs in again).
pub async fn etcd_auth_token_expiry() -> Row {
    let etcd =
        blocking(|| EtcdServer::start_with_auth(ROOT_PASSWORD, Some(Duration::from_secs(2))));
    let ep = etcd.endpoint();
    let target = format!(
        "etcd://{}:{ROOT_PASSWORD}@{ep}/expiry",
        EtcdServer::ROOT_USER
    );
    let servers = echo_servers("expiry", 3).await;
    let _registrations = register_all(&GoZeroDriver, &target, &servers).await;
    let channel = channel(&target, &GoZeroDriver, 3).await;
    let client = authed_client(&ep).await;

    let load = Load::start(&channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut kv = client.kv_client();
    let keys = kv
        .get(
            "expiry/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .expect("list keys");
    let victim = keys.kvs()[0].key().to_vec();
    kv.delete(victim, None).await.expect("delete a key");
    let recovery = until(Duration::from_secs(5), || {
        count_keys(&client, "expiry/").map_eq(3)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let record = load.stop().await;
    let failed = record.failed();
    Row {
        scenario: "etcd-auth-token-expiry",
        driver: Kind::GoZero.name(),
        calls: record.calls(),
        failed,
        recovery_of: "a key deleted after token expiry put back",
        recovery,
        detail: "token TTL 2 s, key deleted 4 s in".into(),
        violation: judge(failed, recovery, RECOVERY_BOUND),
        errors: record.errors,
    }
}

/// etcd frozen (SIGSTOP) for longer than the lease TTL, then resumed.
pub async fn etcd_freeze() -> Row {
    let mut etcd = EtcdServer::start();
    let ep = etcd.endpoint();
    let client = etcd_client(std::slice::from_ref(&ep)).await;
    let target = format!("etcd://{ep}/frozen");
    let servers = echo_servers("freeze", 3).await;
    let _registrations = register_all(&GoZeroDriver, &target, &servers).await;
    let channel = channel(&target, &GoZeroDriver, 3).await;
    let pid = etcd.pid().expect("etcd runs");

    let load = Load::start(&channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(pid, "STOP");
    // Past go-zero's 10 s TTL: the leases expire the moment etcd resumes.
    tokio::time::sleep(Duration::from_secs(12)).await;
    signal(pid, "CONT");
    let recovery = until(Duration::from_secs(10), || {
        count_keys(&client, "frozen/").map_eq(3)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let record = load.stop().await;
    let failed = record.failed();
    let still = blocking(|| etcd.is_running());
    Row {
        scenario: "etcd-freeze",
        driver: Kind::GoZero.name(),
        calls: record.calls(),
        failed,
        recovery_of: "3 keys back after etcd resumed",
        recovery,
        detail: format!("etcd frozen 12 s (TTL 10 s); etcd alive after: {still}"),
        violation: judge(failed, recovery, RECOVERY_BOUND),
        errors: record.errors,
    }
}

/// A registered key deleted by hand.
pub async fn key_deleted() -> Row {
    let etcd = EtcdServer::start();
    let ep = etcd.endpoint();
    let client = etcd_client(std::slice::from_ref(&ep)).await;
    let target = format!("etcd://{ep}/deleted");
    let servers = echo_servers("deleted", 3).await;
    let _registrations = register_all(&GoZeroDriver, &target, &servers).await;
    let channel = channel(&target, &GoZeroDriver, 3).await;

    let load = Load::start(&channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut kv = client.kv_client();
    let keys = kv
        .get(
            "deleted/",
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .expect("list keys");
    let victim = keys.kvs()[0].key().to_vec();
    kv.delete(victim, None).await.expect("delete a key");
    let recovery = until(Duration::from_secs(5), || {
        count_keys(&client, "deleted/").map_eq(3)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let record = load.stop().await;
    let failed = record.failed();
    Row {
        scenario: "key-deleted",
        driver: Kind::GoZero.name(),
        calls: record.calls(),
        failed,
        recovery_of: "the key put back",
        recovery,
        detail: format!("{WORKERS} callers"),
        violation: judge(failed, recovery, Duration::from_secs(1)),
        errors: record.errors,
    }
}

/// The leader of a 3-member etcd cluster SIGKILLed under load.
pub async fn etcd_leader_loss() -> Row {
    let mut cluster = blocking(|| EtcdCluster::start(3));
    let endpoints = cluster.endpoints();
    let client = etcd_client(&endpoints).await;
    let target = format!("etcd://{}/leader", endpoints.join(","));
    let servers = echo_servers("leader", 3).await;
    let _registrations = register_all(&GoZeroDriver, &target, &servers).await;
    let channel = channel(&target, &GoZeroDriver, 3).await;

    let load = Load::start(&channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = leader(&endpoints).await;
    blocking(|| cluster.kill_member(leader));
    let killed = Instant::now();
    // A new registration must succeed once the cluster elected a new leader.
    let extra = EchoServer::start("leader-extra").await;
    let registered = GoZeroDriver.register_service(&target, &extra.addr()).await;
    let recovery = match registered {
        Ok(_) => until(Duration::from_secs(10), || {
            count_keys(&client, "leader/").map_eq(4)
        })
        .await
        .map(|_| killed.elapsed()),
        Err(_) => None,
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let record = load.stop().await;
    let failed = record.failed();
    Row {
        scenario: "etcd-leader-loss",
        driver: Kind::GoZero.name(),
        calls: record.calls(),
        failed,
        recovery_of: "a new registration visible after the kill",
        recovery,
        detail: format!("member {leader} of 3 killed"),
        // The election itself takes etcd a second or two.
        violation: judge(failed, recovery, Duration::from_secs(5)),
        errors: record.errors,
    }
}

/// Which member of `endpoints` leads the cluster.
async fn leader(endpoints: &[String]) -> usize {
    for (i, ep) in endpoints.iter().enumerate() {
        let mut client = etcd_client(std::slice::from_ref(ep)).await;
        if let Ok(status) = client.status().await
            && status.header().map(|h| h.member_id()) == Some(status.leader())
        {
            return i;
        }
    }
    0
}

/// The consul agent restarted under load (go-zero's consul format).
pub async fn consul_restart() -> Row {
    let mut agent = blocking(ConsulAgent::start);
    let target = format!("consul://{}/consulfaults", agent.http_addr());
    let servers = echo_servers("consul", 3).await;
    let _registrations = register_all(&GoZeroDriver, &target, &servers).await;
    let channel = channel(&target, &GoZeroDriver, 3).await;

    let load = Load::start(&channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocking(|| agent.restart());
    let agent = &agent;
    let recovery = until(Duration::from_secs(10), || async move {
        let (code, body) =
            blocking(|| agent.api("GET", "/v1/health/service/consulfaults?passing=true", ""));
        code == 200
            && serde_json::from_str::<Vec<serde_json::Value>>(&body)
                .is_ok_and(|entries| entries.len() == 3)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let record = load.stop().await;
    let failed = record.failed();
    Row {
        scenario: "consul-restart",
        driver: Kind::GoZero.name(),
        calls: record.calls(),
        failed,
        recovery_of: "3 services passing after the agent restart",
        recovery,
        detail: format!("{WORKERS} callers"),
        violation: judge(failed, recovery, RECOVERY_BOUND),
        errors: record.errors,
    }
}

/// `fut.map_eq(n)`: a future of whether the count equals `n`.
trait MapEq {
    fn map_eq(self, n: usize) -> impl std::future::Future<Output = bool>;
}

impl<F: std::future::Future<Output = usize>> MapEq for F {
    async fn map_eq(self, n: usize) -> bool {
        self.await == n
    }
}
