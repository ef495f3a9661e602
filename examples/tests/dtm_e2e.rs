//! The real dtm coordinator (v1.19.0) drives Rust services through the drivers.
//!
//! Everything is real: a private etcd (and consul) process, the dtm binary built by
//! `bash interop/build.sh` registering itself through its Go driver, and the Rust busi
//! service registered through our driver crates. The Rust client finds dtm through the
//! registry only; dtm finds the busi service through the registry only.
//!
//! The `go-zero` tests use the global driver (`use_driver("dtm-driver-gozero")`); the
//! kratos test uses a `KratosDriver` value, so both live in one process.

use std::time::{Duration, Instant};

use dtmdriver_core::Driver;
use dtmdriver_gozero as _;
use dtmdriver_kratos::KratosDriver;
use examples::dtm::busi_pb::BusiReq;
use examples::dtm::{BranchCall, BusiLog, BusiMethod, BusiServer, DtmClient, Msg, Saga};
use test_support::{ConsulAgent, DtmEndpoint, DtmServer, EtcdServer};

/// dtm settings for quick tests: look for due retries every second.
const FAST_CRON: &str = "TransCronInterval: 1\n";
/// How long a transaction may take to finish.
const FINISH_LIMIT: Duration = Duration::from_secs(60);
/// How long dtm may take to appear in its registry.
const DISCOVERY_LIMIT: Duration = Duration::from_secs(20);
/// dtm's raw codec, as it reaches the service.
const DTM_RAW: &str = "application/grpc+dtm_raw";

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,h2=warn,tower=warn,hyper=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

fn request(amount: i64) -> BusiReq {
    BusiReq {
        amount,
        user_id: "alice".into(),
    }
}

/// A gid from dtm, retried until dtm is in its registry (it registers itself about
/// 100 ms after its gRPC port opens), at most [`DISCOVERY_LIMIT`].
async fn new_gid(client: &mut DtmClient, dtm: &DtmServer) -> String {
    let started = Instant::now();
    loop {
        match client.new_gid().await {
            Ok(gid) => return gid,
            Err(e) if started.elapsed() < DISCOVERY_LIMIT => {
                tracing::debug!(%e, "dtm not reachable through its registry yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "dtm not reachable through its registry within {DISCOVERY_LIMIT:?}: {e}\n\
                 dtm log:\n{}",
                dtm.log_contents()
            ),
        }
    }
}

async fn wait_final(client: &DtmClient, dtm: &DtmServer, gid: &str) -> examples::dtm::TransInfo {
    client
        .wait_final(gid, FINISH_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{e}\ndtm log:\n{}", dtm.log_contents()))
}

/// The calls, as (method, op, branch id, aborted).
fn summary(calls: &[BranchCall]) -> Vec<(BusiMethod, &str, &str, bool)> {
    calls
        .iter()
        .map(|c| (c.method, c.op.as_str(), c.branch_id.as_str(), c.aborted))
        .collect()
}

/// Checks what every call of a dtm transaction carries.
fn assert_from_dtm(calls: &[BranchCall], gid: &str, trans_type: &str, amount: i64) {
    for call in calls {
        assert_eq!(call.content_type, DTM_RAW, "{call:?}");
        assert_eq!(call.gid, gid, "{call:?}");
        assert_eq!(call.trans_type, trans_type, "{call:?}");
        assert_eq!(call.dtm, "", "dtm sends an empty dtm-dtm: {call:?}");
        assert_eq!(call.amount, amount, "the payload arrived as sent: {call:?}");
        assert_eq!(call.user_id, "alice", "{call:?}");
    }
}

/// Submits a TransOut + TransIn message at `busi` (a branch URI prefix) and checks that
/// dtm called both, in order, and finished it `succeed`.
async fn msg_round(client: &mut DtmClient, dtm: &DtmServer, log: &BusiLog, busi: &str) {
    let gid = new_gid(client, dtm).await;
    let msg = Msg::new(&gid)
        .add_message(&format!("{busi}/busi.Busi/TransOut"), &request(30))
        .add_message(&format!("{busi}/busi.Busi/TransIn"), &request(30));
    client.submit_msg(&msg).await.expect("submit the msg");
    let info = wait_final(client, dtm, &gid).await;
    assert_eq!(info.status, "succeed", "{info:?}");
    let calls = log.calls_of(&gid);
    assert_eq!(
        summary(&calls),
        [
            (BusiMethod::TransOut, "action", "01", false),
            (BusiMethod::TransIn, "action", "02", false),
        ],
        "{calls:#?}"
    );
    assert_from_dtm(&calls, &gid, "msg", 30);
}

/// dtm with `dtm-driver-gozero` registered at `REGISTRY/dtmservice`, one Rust busi
/// instance called `instance` registered at `REGISTRY/trans.rpc`, one Msg round: the
/// client finds dtm through the registry and dtm calls both branches through it.
async fn gozero_msg_through(registry: &str, instance: &str) -> BusiLog {
    init_tracing();
    dtmdriver_core::use_driver("dtm-driver-gozero").expect("use dtm-driver-gozero");
    let dtm_target = format!("{registry}/dtmservice");
    let dtm = DtmServer::start_with_config(
        "dtm-driver-gozero",
        &dtm_target,
        DtmEndpoint::Auto,
        FAST_CRON,
    );
    let log = BusiLog::new();
    let busi = BusiServer::start(instance, &log).expect("start busi");
    let busi_target = format!("{registry}/trans.rpc");
    let registration = dtmdriver_core::get_driver()
        .register_service(&busi_target, &busi.addr())
        .await
        .unwrap_or_else(|e| panic!("register busi at {busi_target}: {e}"));

    let mut client = DtmClient::connect(&dtm_target)
        .unwrap_or_else(|e| panic!("dial dtm through {dtm_target}: {e}"))
        .with_http(&dtm.http_addr());
    msg_round(&mut client, &dtm, &log, &busi_target).await;
    registration.deregister().await.expect("deregister");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gozero_etcd_msg_dtm_calls_both_rust_branches() {
    let etcd = EtcdServer::start();
    let log = gozero_msg_through(&format!("etcd://{}", etcd.endpoint()), "a").await;
    assert!(log.calls().iter().all(|c| c.instance == "a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gozero_etcd_saga_with_aborted_trans_in_compensates_in_reverse() {
    init_tracing();
    dtmdriver_core::use_driver("dtm-driver-gozero").expect("use dtm-driver-gozero");
    let etcd = EtcdServer::start();
    let dtm_target = format!("etcd://{}/dtmservice", etcd.endpoint());
    let dtm = DtmServer::start_with_config(
        "dtm-driver-gozero",
        &dtm_target,
        DtmEndpoint::Auto,
        FAST_CRON,
    );
    let log = BusiLog::new();
    log.set_limit(BusiMethod::TransIn, Some(100));
    let busi = BusiServer::start("a", &log).expect("start busi");
    let busi_target = format!("etcd://{}/trans.rpc", etcd.endpoint());
    let _registration = dtmdriver_core::get_driver()
        .register_service(&busi_target, &busi.addr())
        .await
        .expect("register busi");

    let mut client = DtmClient::connect(&dtm_target)
        .expect("dial dtm through etcd")
        .with_http(&dtm.http_addr());
    let gid = new_gid(&mut client, &dtm).await;
    let uri = |method: BusiMethod| format!("{busi_target}{}", method.path());
    let saga = Saga::new(&gid)
        .add_message(
            &uri(BusiMethod::TransOut),
            &uri(BusiMethod::TransOutRevert),
            &request(500),
        )
        .add_message(
            &uri(BusiMethod::TransIn),
            &uri(BusiMethod::TransInRevert),
            &request(500),
        );
    client.submit_saga(&saga).await.expect("submit the saga");
    let info = wait_final(&client, &dtm, &gid).await;
    assert_eq!(info.status, "failed", "{info:?}");
    assert!(
        info.rollback_reason.contains("insufficient balance"),
        "dtm keeps the Aborted message as the rollback reason: {info:?}"
    );
    let calls = log.calls_of(&gid);
    // dtm compensates every branch whose action ran, the failed one included,
    // last branch first.
    assert_eq!(
        summary(&calls),
        [
            (BusiMethod::TransOut, "action", "01", false),
            (BusiMethod::TransIn, "action", "02", true),
            (BusiMethod::TransInRevert, "compensate", "02", false),
            (BusiMethod::TransOutRevert, "compensate", "01", false),
        ],
        "{calls:#?}"
    );
    assert_from_dtm(&calls, &gid, "saga", 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kratos_etcd_msg_dtm_calls_discovery_branches() {
    init_tracing();
    let etcd = EtcdServer::start();
    // dtm's kratos driver registers dtm under /microservices/dtmservice/ and installs
    // kratos' discovery:/// resolver over the same etcd for its branch calls.
    let dtm = DtmServer::start_with_config(
        "dtm-driver-kratos",
        &format!("etcd://{}/dtmservice", etcd.endpoint()),
        DtmEndpoint::Auto,
        FAST_CRON,
    );
    assert_eq!(dtm.endpoint(), format!("grpc://{}", dtm.grpc_addr()));
    let kratos = KratosDriver::default()
        .with_registry(&format!("etcd://{}", etcd.endpoint()))
        .expect("registry");
    let log = BusiLog::new();
    let busi = BusiServer::start("k", &log).expect("start busi");
    let registration = kratos
        .register_service(
            &format!("etcd://{}/trans", etcd.endpoint()),
            &format!("grpc://{}", busi.addr()),
        )
        .await
        .expect("register busi the kratos way");

    let mut client = DtmClient::connect_with(&kratos, "discovery:///dtmservice")
        .expect("dial dtm through kratos discovery")
        .with_http(&dtm.http_addr());
    msg_round(&mut client, &dtm, &log, "discovery:///trans").await;
    registration.deregister().await.expect("deregister");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gozero_consul_msg_dtm_calls_both_rust_branches() {
    let consul = ConsulAgent::start();
    let log = gozero_msg_through(&format!("consul://{}", consul.http_addr()), "c").await;
    assert!(log.calls().iter().all(|c| c.instance == "c"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_instances_during_a_batch_leaves_every_msg_succeed() {
    init_tracing();
    dtmdriver_core::use_driver("dtm-driver-gozero").expect("use dtm-driver-gozero");
    let etcd = EtcdServer::start();
    let dtm_target = format!("etcd://{}/dtmservice", etcd.endpoint());
    let dtm = DtmServer::start_with_config(
        "dtm-driver-gozero",
        &dtm_target,
        DtmEndpoint::Auto,
        FAST_CRON,
    );
    let log = BusiLog::new();
    let mut a = BusiServer::start("a", &log).expect("start busi a");
    let mut b = BusiServer::start("b", &log).expect("start busi b");
    let busi_target = format!("etcd://{}/trans.rpc", etcd.endpoint());
    let driver = dtmdriver_core::get_driver();
    // Both registrations outlive the kill: the dead instance stays in etcd, as a
    // crashed process's key does until its lease expires.
    let _reg_a = driver
        .register_service(&busi_target, &a.addr())
        .await
        .expect("register a");
    let _reg_b = driver
        .register_service(&busi_target, &b.addr())
        .await
        .expect("register b");

    let mut client = DtmClient::connect(&dtm_target)
        .expect("dial dtm through etcd")
        .with_http(&dtm.http_addr());
    const BATCH: usize = 20;
    const KILL_AFTER: usize = 6;
    let mut gids = Vec::with_capacity(BATCH);
    let mut killed = None;
    for i in 0..BATCH {
        let gid = new_gid(&mut client, &dtm).await;
        let msg = Msg::new(&gid)
            .retry_interval(1)
            .add_message(&format!("{busi_target}/busi.Busi/TransOut"), &request(7))
            .add_message(&format!("{busi_target}/busi.Busi/TransIn"), &request(7));
        client.submit_msg(&msg).await.expect("submit a msg");
        gids.push(gid);
        if i + 1 == KILL_AFTER {
            // Kill the instance dtm sent its latest call to (dtm's balancing decides
            // which instances it uses), while later messages are still coming.
            let deadline = Instant::now() + FINISH_LIMIT;
            let last = loop {
                if let Some(call) = log.calls().last() {
                    break call.instance.clone();
                }
                assert!(Instant::now() < deadline, "dtm called no branch");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if last == a.name() {
                a.kill();
            } else {
                b.kill();
            }
            // kill() returns once the instance's runtime is gone: nothing more from it.
            let before = log.calls().len();
            tracing::info!(killed = %last, calls_before = before, "killed one busi instance");
            killed = Some((last, before));
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (killed, calls_before_kill) = killed.expect("an instance was killed");

    for gid in &gids {
        let info = wait_final(&client, &dtm, gid).await;
        assert_eq!(info.status, "succeed", "{gid}: {info:?}");
        let calls = log.calls_of(gid);
        for method in [BusiMethod::TransOut, BusiMethod::TransIn] {
            assert!(
                calls.iter().any(|c| c.method == method && !c.aborted),
                "{gid}: no successful {method:?} in {calls:#?}"
            );
        }
        assert_from_dtm(&calls, gid, "msg", 7);
    }
    let calls = log.calls();
    assert!(
        calls[..calls_before_kill]
            .iter()
            .any(|c| c.instance == killed),
        "the killed instance served calls before the kill"
    );
    let after: Vec<&BranchCall> = calls[calls_before_kill..].iter().collect();
    assert!(
        after.len() >= 2 * (BATCH - KILL_AFTER),
        "the messages submitted after the kill were served: {after:#?}"
    );
    assert!(
        after.iter().all(|c| c.instance != killed),
        "a killed instance served nothing: {after:#?}"
    );
}
