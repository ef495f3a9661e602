//! etcd failures under load: etcd killed, frozen, a key deleted, the leader lost, a
//! member cut off; and what every registry scenario shares (`serve`, `one_more`,
//! `registry_row`). Instances are in-process echo servers registered by our drivers, so
//! these exercise our engines' recovery (the registrations) and our channel's (no call
//! may fail while the registry is away).

use std::time::{Duration, Instant};

use dtmdriver_core::{Channel, Driver, Registration};
use dtmdriver_gozero::GoZeroDriver;
use test_support::{EchoServer, EtcdCluster, EtcdServer};

use super::{
    Kind, WORKERS, blocking, channel, count_keys, etcd_client, register_each, signal, until,
};
use crate::load::{Load, Record};
use crate::report::Row;

/// How long recovering registrations may take after the registry is back.
pub(super) const RECOVERY_BOUND: Duration = Duration::from_secs(2);

/// Three in-process instances registered at `target` by `driver`, and a channel that
/// lists all three.
pub(super) struct Served {
    _servers: Vec<EchoServer>,
    pub(super) registrations: Vec<Registration>,
    pub(super) channel: Channel,
}

pub(super) async fn serve(driver: &dyn Driver, target: &str, name: &str) -> Served {
    let (servers, registrations) = register_three(driver, target, name).await;
    let channel = channel(target, driver, 3).await;
    Served {
        _servers: servers,
        registrations,
        channel,
    }
}

/// Three in-process instances (`{name}0`..`{name}2`) registered at `target` by `driver`.
async fn register_three(
    driver: &dyn Driver,
    target: &str,
    name: &str,
) -> (Vec<EchoServer>, Vec<Registration>) {
    let mut servers = Vec::with_capacity(3);
    for i in 0..3 {
        servers.push(EchoServer::start(&format!("{name}{i}")).await);
    }
    let registrations = register_each(driver, target, &servers).await;
    (servers, registrations)
}

/// A 4th instance, registered at `target` during a fault.
pub(super) struct Extra {
    _server: EchoServer,
    _registration: Option<Registration>,
    /// When `channel` listed it, counted from the fault; `None` if registering failed
    /// or it was not listed within 15 s.
    pub(super) listed: Option<Duration>,
}

/// Registers a 4th instance at `target` with go-zero's driver and waits (up to 15 s) for
/// `channel` to list it, timed from `since`.
pub(super) async fn one_more(target: &str, name: &str, channel: &Channel, since: Instant) -> Extra {
    let server = EchoServer::start(name).await;
    let registration = GoZeroDriver
        .register_service(target, &server.addr())
        .await
        .ok();
    let listed = match registration {
        Some(_) => until(Duration::from_secs(15), || async {
            channel.status().endpoints.len() == 4
        })
        .await
        .map(|_| since.elapsed()),
        None => None,
    };
    Extra {
        _server: server,
        _registration: registration,
        listed,
    }
}

/// Deletes one of the keys under `prefix` by hand.
async fn delete_one(client: &etcd_client::Client, prefix: &str) {
    let mut kv = client.kv_client();
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_keys_only();
    let keys = kv.get(prefix, Some(options)).await.expect("list keys");
    let victim = keys.kvs()[0].key().to_vec();
    kv.delete(victim, None).await.expect("delete a key");
}

/// A registry scenario's row: it passes with no failed call and recovery within
/// `bound`.
pub(super) fn registry_row(
    scenario: &'static str,
    driver: &'static str,
    record: Record,
    recovery_of: &'static str,
    recovery: Option<Duration>,
    detail: String,
    bound: Duration,
) -> Row {
    let failed = record.failed();
    Row {
        scenario,
        driver,
        calls: record.calls(),
        failed,
        recovery_of,
        recovery,
        detail,
        violation: judge(failed, recovery, bound),
        errors: record.errors,
    }
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
    let served = serve(driver.as_ref(), &format!("etcd://{ep}/faults"), "restart").await;
    let prefix = kind.prefix("faults");

    let load = Load::start(&served.channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocking(|| etcd.kill());
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocking(|| etcd.restart());
    let recovery = until(Duration::from_secs(10), || {
        count_keys(&client, &prefix).map_eq(3)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let scenario = match kind {
        Kind::GoZero => "etcd-restart",
        Kind::Kratos => "etcd-restart-kratos",
        Kind::Native => "etcd-restart-native",
    };
    registry_row(
        scenario,
        kind.name(),
        load.stop().await,
        "3 keys back after etcd restart",
        recovery,
        format!("etcd down 1 s; {WORKERS} callers"),
        RECOVERY_BOUND,
    )
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
    let user = EtcdServer::ROOT_USER;
    let target = format!("etcd://{user}:{ROOT_PASSWORD}@{ep}/authsvc");
    let served = serve(&GoZeroDriver, &target, "auth").await;

    let load = Load::start(&served.channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocking(|| etcd.restart());
    let client = authed_client(&ep).await;
    let recovery = until(Duration::from_secs(15), || async {
        served
            .registrations
            .iter()
            .all(|r| r.health() == dtmdriver_core::RegistrationState::Live)
            && count_keys(&client, "authsvc/").await == 3
    })
    .await;
    // Past the 10 s TTL: leases granted before the restart and not kept alive since
    // would be gone by then.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let kept = count_keys(&client, "authsvc/").await;
    let mut row = registry_row(
        "etcd-auth-restart",
        Kind::GoZero.name(),
        load.stop().await,
        "3 keys back and every registration Live",
        recovery,
        format!("{kept} of 3 keys still there 11 s later (past the TTL)"),
        RECOVERY_BOUND,
    );
    if row.violation.is_none() && kept != 3 {
        row.violation = Some(format!("only {kept} keys outlived the TTL"));
    }
    row
}

/// etcd with authentication and a 2 s token TTL: once the tokens expired, a key deleted
/// by hand must be put back (the keeper logs in again).
pub async fn etcd_auth_token_expiry() -> Row {
    let ttl = Some(Duration::from_secs(2));
    let etcd = blocking(|| EtcdServer::start_with_auth(ROOT_PASSWORD, ttl));
    let ep = etcd.endpoint();
    let user = EtcdServer::ROOT_USER;
    let target = format!("etcd://{user}:{ROOT_PASSWORD}@{ep}/expiry");
    let served = serve(&GoZeroDriver, &target, "expiry").await;
    let client = authed_client(&ep).await;

    let load = Load::start(&served.channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(4)).await;
    delete_one(&client, "expiry/").await;
    let recovery = until(Duration::from_secs(5), || {
        count_keys(&client, "expiry/").map_eq(3)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    registry_row(
        "etcd-auth-token-expiry",
        Kind::GoZero.name(),
        load.stop().await,
        "a key deleted after token expiry put back",
        recovery,
        "token TTL 2 s, key deleted 4 s in".into(),
        RECOVERY_BOUND,
    )
}

/// etcd frozen (SIGSTOP) for longer than the lease TTL, then resumed.
pub async fn etcd_freeze() -> Row {
    let mut etcd = EtcdServer::start();
    let ep = etcd.endpoint();
    let client = etcd_client(std::slice::from_ref(&ep)).await;
    let served = serve(&GoZeroDriver, &format!("etcd://{ep}/frozen"), "freeze").await;
    let pid = etcd.pid().expect("etcd runs");

    let load = Load::start(&served.channel, WORKERS);
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
    let still = blocking(|| etcd.is_running());
    registry_row(
        "etcd-freeze",
        Kind::GoZero.name(),
        record,
        "3 keys back after etcd resumed",
        recovery,
        format!("etcd frozen 12 s (TTL 10 s); etcd alive after: {still}"),
        RECOVERY_BOUND,
    )
}

/// A registered key deleted by hand.
pub async fn key_deleted() -> Row {
    let etcd = EtcdServer::start();
    let ep = etcd.endpoint();
    let client = etcd_client(std::slice::from_ref(&ep)).await;
    let served = serve(&GoZeroDriver, &format!("etcd://{ep}/deleted"), "deleted").await;

    let load = Load::start(&served.channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    delete_one(&client, "deleted/").await;
    let recovery = until(Duration::from_secs(5), || {
        count_keys(&client, "deleted/").map_eq(3)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    registry_row(
        "key-deleted",
        Kind::GoZero.name(),
        load.stop().await,
        "the key put back",
        recovery,
        format!("{WORKERS} callers"),
        Duration::from_secs(1),
    )
}

/// The leader of a 3-member etcd cluster SIGKILLed under load.
pub async fn etcd_leader_loss() -> Row {
    let mut cluster = blocking(|| EtcdCluster::start(3));
    let endpoints = cluster.endpoints();
    let client = etcd_client(&endpoints).await;
    let target = format!("etcd://{}/leader", endpoints.join(","));
    let served = serve(&GoZeroDriver, &target, "leader").await;

    let load = Load::start(&served.channel, WORKERS);
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
    registry_row(
        "etcd-leader-loss",
        Kind::GoZero.name(),
        load.stop().await,
        "a new registration visible after the kill",
        recovery,
        format!("member {leader} of 3 killed"),
        // The election itself takes etcd a second or two.
        Duration::from_secs(5),
    )
}

/// How long a member stays cut off: past go-zero's 10 s lease TTL, so a registration
/// that kept renewing there would lose its key.
const PARTITION: Duration = Duration::from_secs(12);

/// The etcd member carrying the resolver's watch (and, on three members, likely some of
/// the registrations' keep-alives) cut off from its peers for 12 s by a network
/// partition, still reachable by clients, under load; a new instance registered
/// meanwhile must reach the channel, and no registration may lose its key.
pub async fn etcd_partition() -> Row {
    let cluster = blocking(|| EtcdCluster::start_partitionable(3));
    let endpoints = cluster.endpoints();
    let target = format!("etcd://{}/partition", endpoints.join(","));
    // Registered before the channel exists, to tell the resolver's watch stream apart.
    let _registered = register_three(&GoZeroDriver, &target, "partition").await;
    let watches = || -> Vec<f64> {
        blocking(|| {
            (0..3)
                .map(|i| cluster.member_open_streams(i, "Watch"))
                .collect()
        })
    };
    // Each registration watches its own key on a stream of its own, opened once it is
    // registered; then the resolver's stream is the one more.
    let streams = |n: f64| async move {
        until(Duration::from_secs(5), || async {
            watches().iter().sum::<f64>() == n
        })
        .await
        .expect("the watch streams open");
    };
    streams(3.0).await;
    let before = watches();
    let channel = channel(&target, &GoZeroDriver, 3).await;
    streams(4.0).await;
    let watched = watches()
        .iter()
        .zip(&before)
        .position(|(after, before)| after > before)
        .unwrap_or(0);
    let others: Vec<String> = (0..3)
        .filter(|&i| i != watched)
        .map(|i| cluster.endpoint(i))
        .collect();
    let deletes = count_deletes(&etcd_client(&others).await, "partition/").await;

    let load = Load::start(&channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocking(|| cluster.isolate_member(watched));
    let cut = Instant::now();
    let extra = one_more(&target, "partition-extra", &channel, cut).await;
    tokio::time::sleep(PARTITION.saturating_sub(cut.elapsed())).await;
    blocking(|| cluster.rejoin_member(watched));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deleted = deletes.load(std::sync::atomic::Ordering::SeqCst);
    let mut row = registry_row(
        "etcd-partition",
        Kind::GoZero.name(),
        load.stop().await,
        "the instance registered after the cut in the channel",
        extra.listed,
        format!(
            "member {watched} of 3 (the resolver's watch) cut off {} s; {deleted} keys lost",
            PARTITION.as_secs()
        ),
        // etcd ends a leaderless member's streams after three election timeouts.
        Duration::from_secs(8),
    );
    if deleted > 0 && row.violation.is_none() {
        row.violation = Some(format!(
            "{deleted} registration keys deleted (leases expired)"
        ));
    }
    row
}

/// Counts the keys deleted under `prefix` from now on, in a task that lives as long as
/// `client`'s connection.
async fn count_deletes(
    client: &etcd_client::Client,
    prefix: &str,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let options = etcd_client::WatchOptions::new().with_prefix();
    let mut events = client
        .clone()
        .watch(prefix, Some(options))
        .await
        .expect("watch the registrations' keys");
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok(Some(resp)) = events.message().await {
            let delete = etcd_client::EventType::Delete;
            let n = resp
                .events()
                .iter()
                .filter(|e| e.event_type() == delete)
                .count();
            counted.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        }
    });
    count
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

/// `fut.map_eq(n)`: a future of whether the count equals `n`.
trait MapEq {
    fn map_eq(self, n: usize) -> impl std::future::Future<Output = bool>;
}

impl<F: std::future::Future<Output = usize>> MapEq for F {
    async fn map_eq(self, n: usize) -> bool {
        self.await == n
    }
}
