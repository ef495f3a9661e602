//! The scenarios, each a function that sets up real servers, runs a load, injects one
//! failure and returns a [`Row`].

mod consul;
mod degraded;
mod instances;
mod k8s;
mod registry;
mod replacement;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtmdriver_core::{Channel, Driver, Registration};
use etcd_client::{Client, GetOptions};
use test_support::EchoServer;

use crate::report::Row;

pub use consul::{consul_freeze, consul_leader_loss, consul_restart};
pub use degraded::{instance_failing, instance_failing_gozero, instance_throttled};
pub use instances::{instance_crash, instance_frozen, soak};
pub use k8s::k8s_apiserver_restart;
pub use registry::{
    etcd_auth_restart, etcd_auth_token_expiry, etcd_freeze, etcd_leader_loss, etcd_partition,
    etcd_restart, key_deleted,
};
pub use replacement::{rolling_restart, tls_rotation};

/// Concurrent callers of every load.
pub const WORKERS: usize = 16;

/// A scenario by name: whether it runs in the short suite, and how to run it.
pub struct Scenario {
    /// Its name on the command line and in the table.
    pub name: &'static str,
    /// True for the scenarios the test command runs; the others run on demand.
    pub short: bool,
    /// Runs it.
    pub run: fn() -> std::pin::Pin<Box<dyn Future<Output = Row>>>,
}

/// Every scenario, in the order the table lists them.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "rolling-restart",
            short: true,
            run: || Box::pin(rolling_restart()),
        },
        Scenario {
            name: "etcd-restart",
            short: true,
            run: || Box::pin(etcd_restart(Kind::GoZero)),
        },
        Scenario {
            name: "etcd-restart-kratos",
            short: true,
            run: || Box::pin(etcd_restart(Kind::Kratos)),
        },
        Scenario {
            name: "etcd-restart-native",
            short: true,
            run: || Box::pin(etcd_restart(Kind::Native)),
        },
        Scenario {
            name: "etcd-auth-restart",
            short: true,
            run: || Box::pin(etcd_auth_restart()),
        },
        Scenario {
            name: "etcd-auth-token-expiry",
            short: true,
            run: || Box::pin(etcd_auth_token_expiry()),
        },
        Scenario {
            name: "etcd-freeze",
            short: true,
            run: || Box::pin(etcd_freeze()),
        },
        Scenario {
            name: "key-deleted",
            short: true,
            run: || Box::pin(key_deleted()),
        },
        Scenario {
            name: "etcd-leader-loss",
            short: true,
            run: || Box::pin(etcd_leader_loss()),
        },
        Scenario {
            name: "etcd-partition",
            short: true,
            run: || Box::pin(etcd_partition()),
        },
        Scenario {
            name: "consul-restart",
            short: true,
            run: || Box::pin(consul_restart()),
        },
        Scenario {
            name: "consul-freeze",
            short: true,
            run: || Box::pin(consul_freeze()),
        },
        Scenario {
            name: "consul-leader-loss",
            short: true,
            run: || Box::pin(consul_leader_loss()),
        },
        Scenario {
            name: "k8s-apiserver-restart",
            short: true,
            run: || Box::pin(k8s_apiserver_restart()),
        },
        Scenario {
            name: "tls-rotation",
            short: true,
            run: || Box::pin(tls_rotation()),
        },
        Scenario {
            name: "instance-frozen-rr",
            short: true,
            run: || Box::pin(instance_frozen(dtmdriver_core::Policy::RoundRobin)),
        },
        Scenario {
            name: "instance-frozen-wrr",
            short: true,
            run: || Box::pin(instance_frozen(dtmdriver_core::Policy::WeightedRoundRobin)),
        },
        Scenario {
            name: "instance-frozen-p2c",
            short: true,
            run: || Box::pin(instance_frozen(dtmdriver_core::Policy::PeakEwma)),
        },
        Scenario {
            name: "instance-crash",
            short: true,
            run: || Box::pin(instance_crash()),
        },
        Scenario {
            name: "instance-throttled-rr",
            short: true,
            run: || Box::pin(instance_throttled(dtmdriver_core::Policy::RoundRobin)),
        },
        Scenario {
            name: "instance-throttled-p2c",
            short: true,
            run: || Box::pin(instance_throttled(dtmdriver_core::Policy::PeakEwma)),
        },
        Scenario {
            name: "instance-failing-rr",
            short: true,
            run: || Box::pin(instance_failing(dtmdriver_core::Policy::RoundRobin)),
        },
        Scenario {
            name: "instance-failing-p2c",
            short: true,
            run: || Box::pin(instance_failing(dtmdriver_core::Policy::PeakEwma)),
        },
        Scenario {
            name: "instance-failing-gozero",
            short: false,
            run: || Box::pin(instance_failing_gozero()),
        },
        Scenario {
            name: "soak",
            short: false,
            run: || Box::pin(soak()),
        },
    ]
}

/// Which driver's formats a registry scenario registers and resolves with.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// `dtm-driver-gozero`.
    GoZero,
    /// `dtm-driver-kratos`.
    Kratos,
    /// `dtm-driver-etcd`.
    Native,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::GoZero => "dtm-driver-gozero",
            Kind::Kratos => "dtm-driver-kratos",
            Kind::Native => "dtm-driver-etcd",
        }
    }

    fn driver(self) -> Arc<dyn Driver> {
        match self {
            Kind::GoZero => Arc::new(dtmdriver_gozero::GoZeroDriver),
            Kind::Kratos => Arc::new(dtmdriver_kratos::KratosDriver::default()),
            Kind::Native => Arc::new(dtmdriver_etcd::EtcdDriver),
        }
    }

    /// The etcd prefix its instances of `service` are kept under.
    fn prefix(self, service: &str) -> String {
        match self {
            Kind::GoZero => format!("{service}/"),
            Kind::Kratos => format!("/microservices/{service}/"),
            Kind::Native => format!("/micro/{service}/"),
        }
    }
}

pub use test_support::signal;

/// Polls `check` every 10 ms until it holds (the time it took) or `within` passes.
pub async fn until<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// A plain etcd client for checking what is stored.
pub async fn etcd_client(endpoints: &[String]) -> Client {
    tokio::time::timeout(Duration::from_secs(5), Client::connect(endpoints, None))
        .await
        .expect("connecting to etcd timed out")
        .expect("connect to etcd")
}

/// How many keys are under `prefix` (0 while etcd cannot answer).
pub async fn count_keys(client: &Client, prefix: &str) -> usize {
    let mut kv = client.kv_client();
    let get = kv.get(
        prefix,
        Some(GetOptions::new().with_prefix().with_count_only()),
    );
    match tokio::time::timeout(Duration::from_millis(500), get).await {
        Ok(Ok(resp)) => usize::try_from(resp.count()).unwrap_or(0),
        _ => 0,
    }
}

/// Registers each of `servers` at `target` with `driver`, in order.
pub async fn register_each(
    driver: &dyn Driver,
    target: &str,
    servers: &[EchoServer],
) -> Vec<Registration> {
    let mut registrations = Vec::with_capacity(servers.len());
    for server in servers {
        registrations.push(
            driver
                .register_service(target, &server.addr())
                .await
                .unwrap_or_else(|e| panic!("register {}: {e}", server.addr())),
        );
    }
    registrations
}

/// A channel on `target` through `driver`, waiting until it holds `instances`.
pub async fn channel(target: &str, driver: &dyn Driver, instances: usize) -> Channel {
    let channel = Channel::builder(target)
        .driver(driver)
        .expect("the driver resolves the target")
        .connect()
        .expect("connect");
    channel.warm_up();
    let listed = until(Duration::from_secs(10), || async {
        channel.status().endpoints.len() == instances
    })
    .await;
    assert!(
        listed.is_some(),
        "{target} never listed {instances} instances: {:?}",
        channel.status()
    );
    channel
}

/// How many of `channel`'s endpoints are ready.
pub fn ready_count(channel: &Channel) -> usize {
    channel
        .status()
        .endpoints
        .iter()
        .filter(|e| e.state == "ready")
        .count()
}

/// Waits up to 10 s for `n` of `channel`'s endpoints to be ready (go-zero registers
/// before it listens: a listed instance may refuse its first dial), or panics showing
/// them: a load starts on ready instances.
pub async fn wait_ready(channel: &Channel, n: usize) {
    let ready = until(Duration::from_secs(10), || async {
        ready_count(channel) == n
    })
    .await;
    assert!(
        ready.is_some(),
        "the {n} instances never got ready: {:?}",
        channel.status()
    );
}

/// Runs blocking process control (kill, restart) without stalling the runtime.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}
