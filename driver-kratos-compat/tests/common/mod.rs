//! Shared helpers of the kratos interop tests: the Go programs under `interop/kratos/`
//! (built by `bash interop/build.sh` into `interop/bin/`), echo calls, TLS servers.

#![allow(dead_code)] // each test file uses its own subset

use std::sync::mpsc;
use std::time::{Duration, Instant};

use dtmdriver_core::{Channel, TlsConnector};
use test_support::{EchoServer, InteropProcess, TestPki, run_interop, say};

/// Runs kratos-echo-client with `args` (bounded to 40 s) and returns the server names
/// it printed.
pub fn kratos_client(args: &[String]) -> Vec<String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_interop("kratos-echo-client", &args, Duration::from_secs(40))
}

/// A kratos Go program, killed when dropped; its stdout lines arrive on a channel.
pub struct GoProcess {
    process: InteropProcess,
    pub lines: mpsc::Receiver<(Instant, String)>,
}

impl GoProcess {
    pub fn start(binary: &str, args: &[&str]) -> Self {
        let (process, lines) = InteropProcess::start_lines(binary, args);
        Self { process, lines }
    }

    /// Sends SIGINT and waits (bounded) for the process to exit.
    pub fn interrupt(&mut self) {
        self.process.interrupt();
    }
}

/// Echo calls every 20 ms in a task, counted, until [`stop`](SteadyTraffic::stop):
/// the traffic of the restart tests.
pub struct SteadyTraffic {
    calls: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failures: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl SteadyTraffic {
    /// Starts calling `channel`.
    pub fn start(channel: Channel) -> Self {
        use std::sync::atomic::Ordering;
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failures = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let (calls, failures, stop) = (calls.clone(), failures.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    match say(&channel).await {
                        Ok(_) => calls.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("call failed: {e:?}");
                            failures.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self {
            calls,
            failures,
            stop,
            task,
        }
    }

    /// Stops the calls and returns how many succeeded and how many failed.
    pub async fn stop(self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the traffic task panicked");
        (
            self.calls.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

/// Calls until one succeeds (bounded by `within`); returns the answering server.
pub async fn say_eventually(channel: Channel, within: Duration) -> String {
    let until = Instant::now() + within;
    loop {
        match say(&channel).await {
            Ok(name) => return name,
            Err(e) => assert!(
                Instant::now() < until,
                "no call succeeded within {within:?}; last error: {e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TLS echo server answering "tls" with a `localhost` certificate from a fresh CA:
/// (server, CA PEM).
pub async fn start_tls_echo() -> (EchoServer, String) {
    let pki = TestPki::new(&["localhost"]);
    (EchoServer::start_tls("tls", &pki).await, pki.ca_pem.clone())
}

/// The path of one of `pki`'s files, as a string for a command line.
pub fn path(pki: &TestPki, name: &str) -> String {
    pki.path(name).to_string_lossy().into_owned()
}

/// A TLS connector trusting `pki`'s CA.
pub fn connector(pki: &TestPki) -> TlsConnector {
    TlsConnector::from_ca_pem(pki.ca_pem.as_bytes()).unwrap()
}

/// The names answering `n` calls through `channel`, after one call has succeeded
/// (bounded by `within`), and the endpoint addresses the channel holds then.
pub async fn answers(channel: Channel, n: usize, within: Duration) -> (Vec<String>, Vec<String>) {
    let mut names = vec![say_eventually(channel.clone(), within).await];
    for _ in 1..n {
        names.push(say(&channel).await.unwrap());
    }
    let addrs = channel
        .status()
        .endpoints
        .iter()
        .map(|e| e.endpoint.addr.clone())
        .collect();
    (names, addrs)
}

/// TLS interop with real kratos both ways over one registry. `registry` is the kratos
/// programs' flag for it (`-etcd host:port` or `-consul host:port`); `driver` is a
/// dtm-driver-kratos on the same registry; `target` turns a service name into the
/// target the driver registers under.
///
/// - A kratos TLS server registers `grpcs://…` and a kratos plaintext server of the
///   same service `grpc://…`: our TLS channel calls only the first, our plaintext
///   channel only the second.
/// - We register a TLS instance as `grpcs://…` and a plaintext one as `grpc://…`: the
///   kratos client dialing with TLS (`grpc.Dial` + `WithTLSConfig`) calls only the first,
///   the insecure one (`grpc.DialInsecure`) only the second.
///
/// The certificate names the two services and not the address: kratos' Go client checks
/// the service name, and so must our kratos TLS channel by default.
pub async fn tls_interop_both_ways(
    registry: [&str; 2],
    driver: &dtmdriver_kratos::KratosDriver,
    target: impl Fn(&str) -> String,
) {
    use dtmdriver_core::Driver;
    let pki = TestPki::new(&["gosec", "rustsec"]);

    // kratos servers, our clients.
    let (tls_listen, plain_listen) = (
        format!("127.0.0.1:{}", test_support::free_port()),
        format!("127.0.0.1:{}", test_support::free_port()),
    );
    let (cert, key) = (path(&pki, "server.pem"), path(&pki, "server-key.pem"));
    let go_server = |listen: &str, name: &str, extra: &[&str]| {
        let mut args = vec![registry[0], registry[1], "-service", "gosec"];
        args.extend(["-listen", listen, "-name", name]);
        args.extend(extra);
        GoProcess::start("kratos-echo-server", &args)
    };
    let _go_tls = go_server(
        &tls_listen,
        "gotls",
        &["-tls-cert", &cert, "-tls-key", &key],
    );
    let _go_plain = go_server(&plain_listen, "goplain", &[]);
    let secure = driver
        .tls_channel("discovery:///gosec", connector(&pki))
        .unwrap()
        .connect()
        .unwrap();
    let (names, addrs) = answers(secure, 6, Duration::from_secs(25)).await;
    assert_eq!(names, ["gotls"; 6]);
    assert_eq!(addrs, [tls_listen.as_str()]);
    let plaintext = Channel::builder("discovery:///gosec")
        .driver(driver)
        .unwrap()
        .connect()
        .unwrap();
    let (names, addrs) = answers(plaintext, 6, Duration::from_secs(25)).await;
    assert_eq!(names, ["goplain"; 6]);
    assert_eq!(addrs, [plain_listen]);

    // our servers, kratos clients.
    let tls_echo = EchoServer::start_tls("tls", &pki).await;
    let plain = EchoServer::start("rust-plain").await;
    let _tls_reg = driver
        .register_service(&target("rustsec"), &format!("grpcs://{}", tls_echo.addr()))
        .await
        .unwrap();
    let _plain_reg = driver
        .register_service(&target("rustsec"), &format!("grpc://{}", plain.addr()))
        .await
        .unwrap();
    let ca = path(&pki, "ca.pem");
    let secure_args: Vec<String> = [
        registry[0],
        registry[1],
        "-service",
        "rustsec",
        "-n",
        "4",
        "-tls-ca",
        &ca,
    ]
    .map(String::from)
    .into();
    let names = tokio::task::spawn_blocking(move || kratos_client(&secure_args))
        .await
        .unwrap();
    assert_eq!(names, ["tls"; 4]);
    let plain_args: Vec<String> = [registry[0], registry[1], "-service", "rustsec", "-n", "4"]
        .map(String::from)
        .into();
    let names = tokio::task::spawn_blocking(move || kratos_client(&plain_args))
        .await
        .unwrap();
    assert_eq!(names, ["rust-plain"; 4]);
}

/// Median and 99th percentile of `samples`.
pub fn median_p99(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let n = samples.len();
    let p99 = ((n as f64 * 0.99).ceil() as usize).clamp(1, n) - 1;
    (samples[n / 2], samples[p99])
}
