//! `dtmdriver`: debug service discovery from the command line.
//!
//! ```text
//! dtmdriver [--driver NAME] drivers
//! dtmdriver [--driver NAME] parse URI
//! dtmdriver [--driver NAME] resolve TARGET [--watch] [--timeout D] [--connect] [TLS]
//! dtmdriver [--driver NAME] register TARGET ENDPOINT
//! dtmdriver [--driver NAME] call URI [--data-hex HEX | --data-file F] [--metadata k=v]... [--timeout D] [TLS]
//!
//! TLS: --tls-ca FILE [--tls-server-name NAME]
//! ```
//!
//! `--driver` defaults to `$DTM_DRIVER`, else `default`. Results go to stdout as JSON
//! (hex for `call`); errors to stderr with a non-zero exit code.
//!
//! With `--tls-ca`, endpoints are dialed with TLS, trusting the CA certificates in the
//! PEM file; certificates are checked against `--tls-server-name`, else the endpoint's
//! host. Under `dtm-driver-kratos` the channel takes the instances' TLS endpoints
//! (`grpcs://`) and checks certificates against the service name, as kratos' Go client
//! does.
//!
//! `k8s://NAMESPACE/SERVICE:PORT` (under `dtm-driver-gozero`) reads the cluster of the
//! kubeconfig in `KUBECONFIG`, else `~/.kube/config`, or, inside a pod, its service
//! account.

#![allow(clippy::print_stdout)] // a CLI's output is its product

// Link every driver of the workspace so `--driver` finds them.
use dtmdriver_consul as _;
use dtmdriver_etcd as _;
use dtmdriver_gozero as _;
use dtmdriver_kratos as _;

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use dtmdriver_core::target::redact;
use dtmdriver_core::{Channel, ChannelBuilder, Endpoint, TlsConnector};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "dtmdriver",
    version,
    about = "Resolve, register, parse and call through dtm drivers"
)]
struct Cli {
    /// The driver to use (see `dtmdriver drivers`).
    #[arg(long, global = true, env = "DTM_DRIVER", default_value = "default")]
    driver: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the linked drivers, one name a line.
    Drivers,
    /// Split a dtm branch URI into server and method.
    Parse {
        /// e.g. etcd://127.0.0.1:2379/trans/pb.Trans/TransOut
        uri: String,
    },
    /// Print the endpoints a target resolves to.
    Resolve {
        /// e.g. etcd://127.0.0.1:2379/trans, direct:///127.0.0.1:1,127.0.0.1:2 or
        /// k8s://NAMESPACE/SERVICE:PORT (with KUBECONFIG)
        target: String,
        /// Print one JSON line per change until interrupted.
        #[arg(long)]
        watch: bool,
        /// How long to wait for the first resolution: seconds, or 500ms, 2m (1ms to 24h).
        #[arg(long, default_value = "5")]
        timeout: String,
        /// Also dial each endpoint and show its connection state.
        #[arg(long)]
        connect: bool,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Register ENDPOINT at TARGET until SIGINT/SIGTERM, then deregister.
    Register {
        /// e.g. etcd://127.0.0.1:2379/trans.rpc
        target: String,
        /// e.g. 127.0.0.1:9000 (kratos: grpc://127.0.0.1:9000)
        endpoint: String,
    },
    /// Make a unary call with raw bytes; prints the response bytes as hex.
    Call {
        /// e.g. direct:///127.0.0.1:2379/etcdserverpb.Maintenance/Status
        uri: String,
        /// Request message bytes in hex.
        #[arg(long, conflicts_with = "data_file")]
        data_hex: Option<String>,
        /// File holding the request message bytes.
        #[arg(long)]
        data_file: Option<std::path::PathBuf>,
        /// Request metadata, repeatable: --metadata dtm-gid=abc
        #[arg(long = "metadata", value_name = "KEY=VALUE")]
        metadata: Vec<String>,
        /// Deadline of the call: seconds, or 500ms, 2m (1ms to 24h).
        #[arg(long, default_value = "10")]
        timeout: String,
        #[command(flatten)]
        tls: TlsArgs,
    },
}

#[derive(clap::Args)]
struct TlsArgs {
    /// Dial endpoints with TLS, trusting the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// Check server certificates against NAME instead of the endpoint's host (kratos:
    /// the service name).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,
}

impl TlsArgs {
    /// A channel builder for `target` under the driver named `driver`, with TLS if
    /// asked for.
    fn channel(&self, driver: &str, target: &str) -> Result<ChannelBuilder, Failure> {
        let bad = |e: dtmdriver_core::Error| Failure(e.to_string(), 2);
        let Some(ca) = &self.tls_ca else {
            return Ok(Channel::builder(target));
        };
        let pem =
            std::fs::read(ca).map_err(|e| Failure(format!("--tls-ca {}: {e}", ca.display()), 2))?;
        let mut tls = TlsConnector::from_ca_pem(&pem)
            .map_err(|e| Failure(format!("--tls-ca {}: {e}", ca.display()), 2))?;
        if let Some(name) = &self.tls_server_name {
            tls = tls.with_server_name(name);
        }
        if driver == dtmdriver_kratos::NAME {
            return dtmdriver_kratos::KratosDriver::default()
                .tls_channel(target, tls)
                .map_err(bad);
        }
        Ok(Channel::builder(target).tls(tls))
    }
}

#[derive(Serialize)]
struct Resolved<'a> {
    target: &'a str,
    endpoints: Vec<ResolvedEndpoint>,
}

#[derive(Serialize, PartialEq, Clone)]
struct ResolvedEndpoint {
    #[serde(flatten)]
    endpoint: Endpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A failure: the message and the exit code.
struct Failure(String, u8);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string(), 1)
    }
}

/// Whether log lines may carry ANSI colour: only when stderr is a terminal (not a pipe,
/// a file or a CI log) and `NO_COLOR` is unset or empty (<https://no-color.org>).
fn log_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(log_colour())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dtmdriver: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(()) => 0,
        Err(Failure(message, code)) => {
            eprintln!("dtmdriver: {message}");
            code
        }
    };
    // Exit with the runtime still up: tearing it down cancels the engines' tasks
    // (watches, connections) while others still run, and those log what looks like a
    // failure (a connection "retired", a watch interrupted) after the result.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    std::process::exit(i32::from(code))
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let chosen = || {
        dtmdriver_core::use_driver(&cli.driver)
            .map(|()| dtmdriver_core::get_driver())
            .map_err(|e| Failure(e.to_string(), 2))
    };
    match cli.command {
        Command::Drivers => {
            for name in dtmdriver_core::driver_names() {
                println!("{name}");
            }
            Ok(())
        }
        Command::Parse { uri } => {
            let driver = chosen()?;
            let sm = driver.parse_server_method(&uri).map_err(|e| {
                Failure(
                    format!(
                        "{e} (driver in use: `{}`; choose one with --driver or DTM_DRIVER)",
                        cli.driver
                    ),
                    2,
                )
            })?;
            // The server is shown, not dialled: without its secrets.
            let shown = dtmdriver_core::ServerMethod {
                server: redact(&sm.server),
                method: sm.method,
            };
            println!("{}", serde_json::to_string(&shown)?);
            Ok(())
        }
        Command::Resolve {
            target,
            watch,
            timeout,
            connect,
            tls,
        } => {
            let timeout = flag_duration("--timeout", &timeout)?;
            chosen()?;
            let builder = tls.channel(&cli.driver, &target)?;
            resolve(builder, &target, watch, timeout, connect).await
        }
        Command::Register { target, endpoint } => {
            let driver = chosen()?;
            let registration = driver
                .register_service(&target, &endpoint)
                .await
                .map_err(failure)?;
            println!(
                "{}",
                serde_json::json!({"registered": {
                    "target": redact(&target),
                    "endpoint": registration.endpoint(),
                    "driver": cli.driver,
                }})
            );
            wait_for_signal().await?;
            registration.deregister().await?;
            eprintln!(
                "dtmdriver: deregistered {endpoint} from {}",
                redact(&target)
            );
            Ok(())
        }
        Command::Call {
            uri,
            data_hex,
            data_file,
            metadata,
            timeout,
            tls,
        } => {
            let payload = match (data_hex, data_file) {
                (Some(h), _) => {
                    hex::decode(h.trim()).map_err(|e| Failure(format!("--data-hex: {e}"), 2))?
                }
                (None, Some(f)) => std::fs::read(&f)
                    .map_err(|e| Failure(format!("--data-file {}: {e}", f.display()), 2))?,
                (None, None) => Vec::new(),
            };
            let mut pairs = Vec::new();
            for m in &metadata {
                let Some((k, v)) = m.split_once('=') else {
                    return Err(Failure(format!("--metadata `{m}`: write KEY=VALUE"), 2));
                };
                dtmdriver_core::invoke::request_metadata(&[(k, v)])
                    .map_err(|e| Failure(format!("--metadata: {e}"), 2))?;
                pairs.push((k, v));
            }
            let timeout = flag_duration("--timeout", &timeout)?;
            let sm = chosen()?
                .parse_server_method(&uri)
                .map_err(|e| Failure(e.to_string(), 2))?;
            let channel = tls
                .channel(&cli.driver, &sm.server)?
                .resolve_timeout(timeout)
                .connect()
                .map_err(|e| Failure(e.to_string(), 2))?;
            let call = dtmdriver_core::call_raw(&channel, &sm.method, Bytes::from(payload), &pairs);
            let reply = match tokio::time::timeout(timeout, call).await {
                Ok(r) => r,
                Err(_) => Err(tonic_deadline(timeout)),
            }
            .map_err(|s| {
                Failure(
                    format!("call failed: {}: {}", code_name(s.code()), s.message()),
                    3,
                )
            })?;
            println!("{}", hex::encode(reply));
            Ok(())
        }
    }
}

fn tonic_deadline(timeout: Duration) -> tonic::Status {
    tonic::Status::deadline_exceeded(format!("no reply within {} ms", timeout.as_millis()))
}

/// gRPC's canonical name of a status code, e.g. `UNAVAILABLE`, `DEADLINE_EXCEEDED`.
fn code_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// The range of `--timeout`.
const TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(24 * 3600);

/// A duration flag, read as targets write durations; a usage error (exit 2) otherwise.
fn flag_duration(flag: &str, text: &str) -> Result<Duration, Failure> {
    dtmdriver_core::duration::parse_duration(flag, text, &TIMEOUT_RANGE).map_err(|e| Failure(e, 2))
}

/// A library error as a failure: exit 2 when the input was wrong (a target, an
/// endpoint, a driver name: fix the command), else 1.
fn failure(e: dtmdriver_core::Error) -> Failure {
    use dtmdriver_core::Error as E;
    let code = match e {
        E::BadTarget { .. }
        | E::BadEndpoint { .. }
        | E::BadUri { .. }
        | E::UnknownScheme { .. }
        | E::UnknownDriver { .. }
        | E::Unsupported { .. } => 2,
        _ => 1,
    };
    Failure(e.to_string(), code)
}

async fn resolve(
    builder: ChannelBuilder,
    target: &str,
    watch: bool,
    timeout: Duration,
    connect: bool,
) -> Result<(), Failure> {
    let channel = builder
        .resolve_timeout(timeout)
        .connect()
        .map_err(|e| Failure(e.to_string(), 2))?;
    if connect {
        channel.warm_up();
    }
    let view = |channel: &Channel| -> Option<Vec<ResolvedEndpoint>> {
        let status = channel.status();
        status.resolved.then(|| {
            status
                .endpoints
                .into_iter()
                .map(|e| ResolvedEndpoint {
                    endpoint: e.endpoint,
                    state: connect.then_some(e.state),
                    error: if connect { e.error } else { None },
                })
                .collect()
        })
    };
    let mut updates = channel.updates();
    let first = tokio::time::timeout(timeout, async {
        loop {
            if let Some(v) = view(&channel) {
                return v;
            }
            if updates.changed().await.is_err() {
                return Vec::new();
            }
        }
    })
    .await;
    let mut last = match first {
        Ok(v) => v,
        Err(_) => {
            let why = channel
                .status()
                .resolver_error
                .unwrap_or_else(|| "the resolver has not answered".to_string());
            return Err(Failure(
                format!(
                    "`{}` did not resolve within {} ms: {why}",
                    redact(target),
                    timeout.as_millis()
                ),
                3,
            ));
        }
    };
    if connect && !watch {
        // Give the dials a moment so the states mean something.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while view(&channel).is_some_and(|v| {
                v.iter()
                    .any(|e| matches!(e.state, Some("idle" | "connecting")))
            }) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        last = view(&channel).unwrap_or(last);
    }
    print_resolved(target, &last)?;
    if !watch {
        return Ok(());
    }
    let mut last_error = None;
    loop {
        tokio::select! {
            r = wait_for_signal() => return r,
            r = updates.changed() => if r.is_err() { return Ok(()) },
        }
        let status = channel.status();
        if status.resolver_error != last_error {
            if let Some(e) = &status.resolver_error {
                eprintln!("dtmdriver: resolver error (keeping the last set): {e}");
            }
            last_error = status.resolver_error;
        }
        if let Some(v) = view(&channel)
            && v != last
        {
            print_resolved(target, &v)?;
            last = v;
        }
    }
}

fn print_resolved(target: &str, endpoints: &[ResolvedEndpoint]) -> Result<(), Failure> {
    let line = serde_json::to_string(&Resolved {
        target: &redact(target),
        endpoints: endpoints.to_vec(),
    })?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

async fn wait_for_signal() -> Result<(), Failure> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(Failure::from),
        _ = term.recv() => Ok(()),
    }
}
