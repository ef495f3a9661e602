//! dtm-driver-gozero's `k8s://` targets against a real kube-apiserver. No controller
//! runs: the tests write the EndpointSlices themselves, as the EndpointSlice controller
//! would. The tests that leave the server alone share one ([`KubeApiServer::shared`]),
//! each in a namespace of its own; the fault test starts its own.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtmdriver_core::resolve::{Resolver, SnapshotReceiver, SnapshotSender};
use dtmdriver_core::{Channel, Target};
use dtmdriver_gozero::{GoZeroDriver, GoZeroK8sResolver};
use dtmdriver_k8s::{Credentials, ServiceKey, ServiceWatch, resolve_service, use_credentials};
use test_support::{EchoServer, KubeApiServer, KubeUser, say};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a change may take to reach a resolver before the test fails.
const WITHIN: Duration = Duration::from_secs(10);

/// The shared server, with `k8s://` targets of this process reading it as the admin,
/// and a fresh namespace `name`.
fn shared(namespace: &str) -> Arc<KubeApiServer> {
    let server = KubeApiServer::shared();
    use_credentials(Credentials::Kubeconfig(Some(
        server.kubeconfig(KubeUser::Admin),
    )));
    server.create_namespace(namespace);
    server
}

fn resolve(target: &str) -> SnapshotReceiver {
    let (tx, rx) = SnapshotSender::channel();
    GoZeroK8sResolver
        .resolve(&Target::parse(target).unwrap(), tx)
        .unwrap();
    rx
}

fn set(addrs: &[&str]) -> BTreeSet<String> {
    addrs.iter().map(|a| a.to_string()).collect()
}

fn current(rx: &SnapshotReceiver) -> Option<BTreeSet<String>> {
    let state = rx.borrow();
    let endpoints = state.endpoints.as_ref()?;
    Some(endpoints.iter().map(|e| e.addr.clone()).collect())
}

/// Waits until `rx` publishes `expect`; how long that took.
async fn resolves_to(rx: &mut SnapshotReceiver, expect: &BTreeSet<String>, what: &str) -> Duration {
    let start = Instant::now();
    let wait = rx.wait_for(|s| {
        s.endpoints
            .as_ref()
            .is_some_and(|e| e.iter().map(|e| e.addr.clone()).collect::<BTreeSet<_>>() == *expect)
    });
    if tokio::time::timeout(WITHIN, wait).await.is_err() {
        panic!("{what}: expected {expect:?}, have {:?}", *rx.borrow());
    }
    start.elapsed()
}

/// Waits until `rx` reports an error containing every one of `parts`; the error.
async fn fails_with(rx: &mut SnapshotReceiver, parts: &[&str]) -> String {
    let wait = rx.wait_for(|s| {
        s.last_error
            .as_ref()
            .is_some_and(|e| parts.iter().all(|p| e.contains(p)))
    });
    let found = match tokio::time::timeout(WITHIN, wait).await {
        Ok(Ok(state)) => state.last_error.clone(),
        _ => None,
    };
    found.unwrap_or_else(|| panic!("expected an error with {parts:?}, have {:?}", *rx.borrow()))
}

#[tokio::test]
async fn adds_readiness_and_removals_are_followed() {
    let server = shared("follow");
    let mut rx = resolve("k8s://follow/web:8080");
    resolves_to(&mut rx, &set(&[]), "no slice yet: an empty set").await;

    server.put_slice(
        "follow",
        "web-a",
        "web",
        "IPv4",
        &[("10.1.0.1", true)],
        &[80],
    );
    resolves_to(&mut rx, &set(&["10.1.0.1:8080"]), "first instance").await;

    let two = [("10.1.0.1", true), ("10.1.0.2", true)];
    server.put_slice("follow", "web-a", "web", "IPv4", &two, &[80]);
    resolves_to(&mut rx, &set(&["10.1.0.1:8080", "10.1.0.2:8080"]), "added").await;

    // Not ready (a pod failing its probe, or terminating): out of the set.
    let one_down = [("10.1.0.1", false), ("10.1.0.2", true)];
    server.put_slice("follow", "web-a", "web", "IPv4", &one_down, &[80]);
    resolves_to(&mut rx, &set(&["10.1.0.2:8080"]), "made not ready").await;

    server.put_slice("follow", "web-a", "web", "IPv4", &two, &[80]);
    resolves_to(
        &mut rx,
        &set(&["10.1.0.1:8080", "10.1.0.2:8080"]),
        "ready again",
    )
    .await;

    server.put_slice(
        "follow",
        "web-a",
        "web",
        "IPv4",
        &[("10.1.0.2", true)],
        &[80],
    );
    resolves_to(&mut rx, &set(&["10.1.0.2:8080"]), "removed").await;

    // Another service's slice in the namespace is not ours.
    server.put_slice(
        "follow",
        "api-a",
        "api",
        "IPv4",
        &[("10.1.9.9", true)],
        &[80],
    );
    server.delete_slice("follow", "web-a");
    resolves_to(&mut rx, &set(&[]), "slice deleted").await;
}

#[tokio::test]
async fn split_slices_dual_stack_default_port_and_subset() {
    let server = shared("split");
    let four = [
        ("10.2.0.1", true),
        ("10.2.0.2", true),
        ("10.2.0.3", true),
        ("10.2.0.4", true),
    ];
    server.put_slice("split", "db-1", "db", "IPv4", &four, &[5432, 9187]);
    // Without a port: the first port of the first slice.
    let mut rx = resolve("k8s://split/db");
    let all = set(&[
        "10.2.0.1:5432",
        "10.2.0.2:5432",
        "10.2.0.3:5432",
        "10.2.0.4:5432",
    ]);
    resolves_to(&mut rx, &all, "first port").await;

    // The controller splits the slice in two: a second slice takes half, then the first
    // gives it up. The set never loses an instance.
    server.put_slice("split", "db-2", "db", "IPv4", &four[2..], &[5432, 9187]);
    server.put_slice("split", "db-1", "db", "IPv4", &four[..2], &[5432, 9187]);
    resolves_to(&mut rx, &all, "split in two").await;
    server.put_slice("split", "db-2", "db", "IPv4", &four[3..], &[5432, 9187]);
    let three = set(&["10.2.0.1:5432", "10.2.0.2:5432", "10.2.0.4:5432"]);
    resolves_to(
        &mut rx,
        &three,
        "a change in the second slice keeps the first",
    )
    .await;

    // Dual stack: an IPv6 slice beside the IPv4 ones; dialled in brackets.
    server.put_slice(
        "split",
        "db-v6",
        "db",
        "IPv6",
        &[("fd00::5", true)],
        &[5432],
    );
    let mut with_v6 = three.clone();
    with_v6.insert("[fd00::5]:5432".into());
    resolves_to(&mut rx, &with_v6, "dual stack").await;

    // More than 32 ready instances: a channel uses 32 of them.
    let many: Vec<String> = (1..=40).map(|i| format!("10.3.0.{i}")).collect();
    let many: Vec<(&str, bool)> = many.iter().map(|a| (a.as_str(), true)).collect();
    server.put_slice("split", "big-1", "big", "IPv4", &many, &[80]);
    let mut rx = resolve("k8s://split/big:80");
    let wait = rx.wait_for(|s| s.endpoints.as_ref().is_some_and(|e| e.len() == 32));
    tokio::time::timeout(WITHIN, wait).await.unwrap().unwrap();
    let mut rx = resolve("k8s://split/big:80?subset=0");
    let wait = rx.wait_for(|s| s.endpoints.as_ref().is_some_and(|e| e.len() == 40));
    tokio::time::timeout(WITHIN, wait).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_tonic_call_reaches_the_instance_a_slice_names() {
    let server = shared("call");
    let echo = EchoServer::start("pod-a").await;
    let port = echo.addr().rsplit_once(':').unwrap().1.to_string();
    // The apiserver refuses loopback addresses in IPv4 and IPv6 slices (and names with
    // one segment, such as `localhost`, in FQDN slices); an FQDN slice takes the
    // dotted 127.0.0.1, which the channel dials as the address it is.
    server.put_slice(
        "call",
        "echo-1",
        "echo",
        "FQDN",
        &[("127.0.0.1", true)],
        &[],
    );
    let channel = Channel::builder(&format!("k8s://call/echo:{port}"))
        .driver(&GoZeroDriver)
        .unwrap()
        .connect()
        .unwrap();
    assert_eq!(say(&channel).await.unwrap(), "pod-a");
    // The pod goes unready: the channel has nowhere to send.
    server.put_slice(
        "call",
        "echo-1",
        "echo",
        "FQDN",
        &[("127.0.0.1", false)],
        &[],
    );
    test_support::wait_for("the channel to drop the unready pod", WITHIN, || async {
        test_support::addrs(&channel).is_empty()
    })
    .await;
    let status = say(&channel).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
}

#[tokio::test]
async fn one_watch_serves_every_target_of_a_service() {
    let server = shared("share");
    server.put_slice("share", "s-1", "s", "IPv4", &[("10.4.0.1", true)], &[80]);
    let mut a = resolve("k8s://share/s:80");
    let mut b = resolve("k8s://share/s:81");
    resolves_to(&mut a, &set(&["10.4.0.1:80"]), "a").await;
    resolves_to(&mut b, &set(&["10.4.0.1:81"]), "b").await;
    let key = ServiceKey {
        credentials: Credentials::Kubeconfig(Some(server.kubeconfig(KubeUser::Admin))),
        namespace: "share".into(),
        service: "s".into(),
    };
    // The two targets and this probe: three subscribers of one watch.
    let _probe = ServiceWatch::subscribe(&key);
    assert_eq!(ServiceWatch::subscribers(&key), 3);
    drop((a, b));
    test_support::wait_for("the targets' subscriptions to end", WITHIN, || async {
        ServiceWatch::subscribers(&key) == 1
    })
    .await;
}

#[tokio::test]
async fn a_forbidden_identity_is_told_the_role_and_reads_once_bound() {
    let server = shared("rbac");
    server.put_slice("rbac", "p-1", "p", "IPv4", &[("10.5.0.1", true)], &[80]);
    let key = ServiceKey {
        credentials: Credentials::Kubeconfig(Some(server.kubeconfig(KubeUser::Limited))),
        namespace: "rbac".into(),
        service: "p".into(),
    };
    let (tx, mut rx) = SnapshotSender::channel();
    resolve_service(&key, Some(80), tx);
    let error = fails_with(
        &mut rx,
        &["forbidden", "get, list and watch", "endpointslices"],
    )
    .await;
    assert!(error.contains("User \"limited\""), "{error}");
    assert!(error.contains("`rbac`"), "{error}");
    assert!(
        !error.contains(KubeUser::Limited.token()),
        "the token leaked: {error}"
    );

    // The Role of the docs, bound to the identity: the same watch reads.
    server.apply(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/rbac/roles/endpointslice-reader",
        r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role",
            "metadata":{"name":"endpointslice-reader","namespace":"rbac"},
            "rules":[{"apiGroups":["discovery.k8s.io"],"resources":["endpointslices"],
                      "verbs":["get","list","watch"]}]}"#,
    );
    server.apply(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/rbac/rolebindings/limited-reads",
        r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding",
            "metadata":{"name":"limited-reads","namespace":"rbac"},
            "roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"endpointslice-reader"},
            "subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"User","name":"limited"}]}"#,
    );
    resolves_to(&mut rx, &set(&["10.5.0.1:80"]), "after the binding").await;
}

#[tokio::test]
async fn in_cluster_credentials_come_from_the_service_account_directory() {
    let server = shared("incluster");
    server.put_slice(
        "incluster",
        "q-1",
        "q",
        "IPv4",
        &[("10.6.0.1", true)],
        &[80],
    );
    let dir = server.service_account_dir(KubeUser::Admin);
    let key = ServiceKey {
        credentials: Credentials::InCluster {
            dir: dir.clone(),
            host: "127.0.0.1".into(),
            port: server.port().to_string(),
        },
        namespace: "incluster".into(),
        service: "q".into(),
    };
    let (tx, mut rx) = SnapshotSender::channel();
    resolve_service(&key, Some(80), tx);
    resolves_to(&mut rx, &set(&["10.6.0.1:80"]), "in-cluster").await;

    // Without the token mounted the error says what was tried and what is missing.
    let empty = tempfile::tempdir().unwrap();
    let key = ServiceKey {
        credentials: Credentials::InCluster {
            dir: empty.path().into(),
            host: "127.0.0.1".into(),
            port: server.port().to_string(),
        },
        ..key
    };
    let (tx, mut rx) = SnapshotSender::channel();
    resolve_service(&key, Some(80), tx);
    fails_with(&mut rx, &["in-cluster", "KUBERNETES_SERVICE_HOST", "token"]).await;
}

/// A TCP relay to `port` on loopback that can be cut: open connections are dropped and
/// new ones refused until it is opened again.
struct Gate {
    port: u16,
    open: watch::Sender<bool>,
}

impl Gate {
    async fn to(port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (open, rx) = watch::channel(true);
        let gate = Self {
            port: listener.local_addr().unwrap().port(),
            open,
        };
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut rx = rx.clone();
                if !*rx.borrow() {
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        gate
    }

    fn set(&self, open: bool) {
        self.open.send_replace(open);
    }
}

#[tokio::test]
async fn the_watch_resumes_after_an_apiserver_restart_and_lists_again_after_410() {
    // Watches go to etcd (no watch cache), so a compacted revision is refused with 410.
    let mut server = KubeApiServer::start_with_args(&["--watch-cache=false"]);
    server.create_namespace("faults");
    server.put_slice("faults", "f-1", "f", "IPv4", &[("10.7.0.1", true)], &[80]);
    let gate = Gate::to(server.port()).await;
    let url = format!("https://127.0.0.1:{}", gate.port);
    let key = ServiceKey {
        credentials: Credentials::Kubeconfig(Some(server.kubeconfig_via(KubeUser::Admin, &url))),
        namespace: "faults".into(),
        service: "f".into(),
    };
    let (tx, mut rx) = SnapshotSender::channel();
    resolve_service(&key, Some(80), tx);
    let lists = ServiceWatch::subscribe(&key).receiver();
    resolves_to(&mut rx, &set(&["10.7.0.1:80"]), "first list").await;
    assert_eq!(lists.borrow().lists, 1);

    // The apiserver restarts mid-watch: an error meanwhile, the last set kept, and the
    // watch resumes from its resourceVersion (no new list).
    server.kill();
    fails_with(&mut rx, &["faults"]).await;
    assert_eq!(current(&rx), Some(set(&["10.7.0.1:80"])));
    server.restart();
    server.put_slice(
        "faults",
        "f-1",
        "f",
        "IPv4",
        &[("10.7.0.1", true), ("10.7.0.2", true)],
        &[80],
    );
    resolves_to(
        &mut rx,
        &set(&["10.7.0.1:80", "10.7.0.2:80"]),
        "after the restart",
    )
    .await;
    assert_eq!(
        lists.borrow().lists,
        1,
        "a resumed watch lists nothing again"
    );

    // Cut off while the service changes and etcd compacts: the watch cannot resume
    // (410 Gone) and lists again, which brings the changes.
    gate.set(false);
    fails_with(&mut rx, &["faults"]).await;
    server.delete_slice("faults", "f-1");
    server.put_slice("faults", "f-2", "f", "IPv4", &[("10.7.0.3", true)], &[80]);
    server.put_slice("faults", "f-3", "f", "IPv4", &[("10.7.0.4", true)], &[80]);
    server.compact();
    gate.set(true);
    // The new list replaces the old index: the slice deleted meanwhile is gone.
    resolves_to(&mut rx, &set(&["10.7.0.3:80", "10.7.0.4:80"]), "after 410").await;
    assert_eq!(
        lists.borrow().lists,
        2,
        "410 Gone made the watch list again"
    );
    server.put_slice("faults", "f-3", "f", "IPv4", &[("10.7.0.5", true)], &[80]);
    resolves_to(
        &mut rx,
        &set(&["10.7.0.3:80", "10.7.0.5:80"]),
        "watching after the list",
    )
    .await;
}
