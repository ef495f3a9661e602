//! consul failures under load: the agent restarted or frozen, the servers' leader lost.
//! Instances are in-process echo servers registered by our drivers.

use std::time::{Duration, Instant};

use dtmdriver_gozero::GoZeroDriver;
use test_support::{ConsulAgent, ConsulCluster};

use super::registry::{RECOVERY_BOUND, one_more, registry_row, serve};
use super::{Kind, WORKERS, blocking, signal, until};
use crate::load::Load;
use crate::report::Row;

/// The consul agent restarted under load (go-zero's consul format).
pub async fn consul_restart() -> Row {
    let mut agent = blocking(ConsulAgent::start);
    let target = format!("consul://{}/consulfaults", agent.http_addr());
    let served = serve(&GoZeroDriver, &target, "consul").await;

    let load = Load::start(&served.channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocking(|| agent.restart());
    let recovery = until(Duration::from_secs(10), || async {
        passing(&agent, "consulfaults") == 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    registry_row(
        "consul-restart",
        Kind::GoZero.name(),
        load.stop().await,
        "3 services passing after the agent restart",
        recovery,
        format!("{WORKERS} callers"),
        RECOVERY_BOUND,
    )
}

/// How long the consul agent stays frozen: past the native format's 10 s TTL check, so
/// every check is overdue the moment the agent resumes.
const CONSUL_FREEZE: Duration = Duration::from_secs(12);

/// The consul agent SIGSTOPped (a GC pause, a frozen VM) past the TTL of the checks,
/// then resumed, under load through `dtm-driver-consul`, whose resolver keeps passing
/// instances only.
pub async fn consul_freeze() -> Row {
    let agent = blocking(ConsulAgent::start);
    let target = format!("consul://{}/consulfrozen", agent.http_addr());
    let served = serve(&dtmdriver_consul::ConsulDriver, &target, "cfrozen").await;
    let pid = agent.pid().expect("the agent runs");

    let load = Load::start(&served.channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(pid, "STOP");
    tokio::time::sleep(CONSUL_FREEZE).await;
    signal(pid, "CONT");
    let recovery = until(Duration::from_secs(10), || async {
        passing(&agent, "consulfrozen") == 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let live = served
        .registrations
        .iter()
        .filter(|r| r.health().is_live())
        .count();
    registry_row(
        "consul-freeze",
        "dtm-driver-consul",
        load.stop().await,
        "3 services passing after the agent resumed",
        recovery,
        format!(
            "agent frozen {} s (TTL checks 10 s); {live} of 3 registrations live after",
            CONSUL_FREEZE.as_secs()
        ),
        RECOVERY_BOUND,
    )
}

/// How many instances of `service` the agent says are passing (0 while it cannot answer).
fn passing(agent: &ConsulAgent, service: &str) -> usize {
    let path = format!("/v1/health/service/{service}?passing=true");
    let (code, body) = blocking(|| agent.api("GET", &path, ""));
    match serde_json::from_str::<Vec<serde_json::Value>>(&body) {
        Ok(entries) if code == 200 => entries.len(),
        _ => 0,
    }
}

/// The leader of three consul servers SIGKILLed under load. Services register with,
/// and clients ask, a client agent that forwards to the servers, as in production; a
/// service registered once the two others have elected a leader must reach the channel.
/// (One registered during the election is kept by the agent, whose sync to the servers
/// fails then and is retried 15 s later, by consul's design, whatever the client.)
pub async fn consul_leader_loss() -> Row {
    let mut cluster = blocking(|| ConsulCluster::start(3));
    let target = format!("consul://{}/consulleader", cluster.client().http_addr());
    let served = serve(&GoZeroDriver, &target, "cleader").await;

    let load = Load::start(&served.channel, WORKERS);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = blocking(|| cluster.wait_for_leader());
    blocking(|| cluster.kill_server(leader));
    let killed = Instant::now();
    let elected = blocking(|| cluster.wait_for_leader());
    let election = killed.elapsed();
    let extra = one_more(&target, "cleader-extra", &served.channel, killed).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    registry_row(
        "consul-leader-loss",
        Kind::GoZero.name(),
        load.stop().await,
        "a registration after the election in the channel, from the kill",
        extra.listed,
        format!(
            "server {leader} of 3 killed; server {elected} led {} ms later",
            election.as_millis()
        ),
        // consul's election with quick raft timings takes a second or two.
        Duration::from_secs(8),
    )
}
