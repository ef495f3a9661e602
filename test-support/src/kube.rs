//! A private Kubernetes API server: [`KubeApiServer`].
//!
//! The server is the real `kube-apiserver` (k8s.io/kubernetes v1.37.2) with its own etcd
//! (`kube-etcd`: go.etcd.io/etcd/server v3.7.0, the version it is built against; Debian's
//! 3.4 is older than it supports), both built by `bash interop/build.sh` into
//! `interop/bin/`. It serves HTTPS on a free loopback port with a certificate of a fresh
//! CA, authorizes with RBAC, and knows two static bearer tokens: [`KubeUser::Admin`] (in
//! `system:masters`) and [`KubeUser::Limited`] (authenticated, no permission). A
//! service-account signing key is generated so it can mint service-account tokens. No
//! controller runs: tests create EndpointSlices themselves, as the EndpointSlice
//! controller would. Automatic compaction is off ([`KubeApiServer::compact`] compacts).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::ports::free_port;
use crate::process::{self, StartFailure};
use crate::{EtcdServer, TestPki};

/// The message [`kube_apiserver_binary`] panics with when the programs are not built.
pub const KUBE_BUILD_HINT: &str = "interop/bin/kube-apiserver or interop/bin/kube-etcd not \
    found: build them with `bash interop/build.sh` (needs Go) from the workspace root; \
    `bash scripts/test.sh` builds them automatically";

/// How long the apiserver may take until `/readyz` answers 200.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Connect and I/O timeout of one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The identities the server knows (static bearer tokens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KubeUser {
    /// `admin`, in the group `system:masters`: may do anything.
    Admin,
    /// `limited`: authenticated, granted nothing (until a test binds it a Role).
    Limited,
}

impl KubeUser {
    /// The user name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Limited => "limited",
        }
    }

    /// The bearer token.
    pub fn token(self) -> &'static str {
        match self {
            Self::Admin => "dtmdriver-test-admin-token",
            Self::Limited => "dtmdriver-test-limited-token",
        }
    }
}

fn built(name: &str) -> PathBuf {
    let path = format!("{}/../interop/bin/{name}", env!("CARGO_MANIFEST_DIR"));
    crate::find_binary(name, &[&path]).unwrap_or_else(|| panic!("{KUBE_BUILD_HINT}"))
}

/// The path of `kube-apiserver` (`PATH`, else `interop/bin/`).
///
/// # Panics
///
/// Panics with [`KUBE_BUILD_HINT`] if it has not been built.
pub fn kube_apiserver_binary() -> PathBuf {
    built("kube-apiserver")
}

/// A private kube-apiserver (v1.37.2, RBAC, HTTPS with a fresh CA, static tokens for
/// [`KubeUser`]s, a service-account signing key, no controllers, no automatic
/// compaction) and its etcd (`kube-etcd`, v3.7.0) on free loopback ports, both built by
/// `bash interop/build.sh`. Dropping it SIGKILLs both and removes their files. All
/// methods block for at most about a minute and can be called from async tests.
///
/// ```no_run
/// use test_support::{KubeApiServer, KubeUser};
/// let server = KubeApiServer::start();
/// server.create_namespace("ns");
/// server.put_slice("ns", "web-1", "web", "IPv4", &[("10.0.0.1", true)], &[8080]);
/// let kubeconfig = server.kubeconfig(KubeUser::Admin);
/// # drop(kubeconfig);
/// ```
pub struct KubeApiServer {
    binary: PathBuf,
    etcd: EtcdServer,
    pki: TestPki,
    port: u16,
    extra: Vec<String>,
    child: Option<Child>,
}

impl std::fmt::Debug for KubeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApiServer")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl KubeApiServer {
    /// Starts etcd and the apiserver and waits until `/readyz` says ready.
    ///
    /// # Panics
    ///
    /// Panics if the programs are not built (with the command that builds them) or the
    /// apiserver does not become ready; the message includes the end of its log.
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// [`start`](Self::start) with more apiserver flags, e.g. `--watch-cache=false` (so
    /// that watches go to etcd and a [`compact`](Self::compact)ed revision is refused).
    pub fn start_with_args(extra: &[&str]) -> Self {
        let binary = kube_apiserver_binary();
        let etcd = EtcdServer::start_binary(&built("kube-etcd"));
        let pki = TestPki::new(&["127.0.0.1", "localhost"]);
        // The signing key, and its certificate for the key's public half.
        pki.issue("service-account", &["service-accounts"]);
        let tokens: String = [KubeUser::Admin, KubeUser::Limited]
            .iter()
            .map(|u| {
                let groups = if *u == KubeUser::Admin {
                    "system:masters"
                } else {
                    ""
                };
                format!("{},{},{},\"{groups}\"\n", u.token(), u.name(), u.name())
            })
            .collect();
        std::fs::write(pki.path("tokens.csv"), tokens).expect("write tokens.csv");
        let mut server = Self {
            binary,
            etcd,
            pki,
            port: 0,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        process::start_with_retries("kube-apiserver", || {
            server.port = free_port();
            server.spawn();
            server.wait_ready()
        });
        server
    }

    /// A server shared by the tests of one test binary that run at the same time: the
    /// running one if a test still holds it, else a new one. It stops when the last
    /// holder drops it. A test that kills or restarts the server takes its own
    /// ([`start`](Self::start)).
    pub fn shared() -> Arc<Self> {
        static SHARED: Mutex<Weak<KubeApiServer>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let server = Arc::new(Self::start());
        *shared = Arc::downgrade(&server);
        server
    }

    fn log_path(&self) -> PathBuf {
        self.pki.path("kube-apiserver.log")
    }

    fn args(&self) -> Vec<String> {
        let file = |name: &str| self.pki.path(name).display().to_string();
        let mut args = vec![
            format!("--etcd-servers={}", self.etcd.url()),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", self.port),
            format!("--tls-cert-file={}", file("server.pem")),
            format!("--tls-private-key-file={}", file("server-key.pem")),
            format!("--token-auth-file={}", file("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", file("service-account.pem")),
            format!(
                "--service-account-signing-key-file={}",
                file("service-account-key.pem")
            ),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            format!("--cert-dir={}", file("certs")),
            "--endpoint-reconciler-type=none".into(),
            "--etcd-compaction-interval=0".into(),
            "--enable-priority-and-fairness=false".into(),
            "--profiling=false".into(),
        ];
        args.extend(self.extra.iter().cloned());
        args
    }

    fn spawn(&mut self) {
        let command = process::logged_command(
            &self.binary,
            self.args(),
            &self.log_path(),
            &self.args().join(" "),
        );
        let child = process::spawn(command, &self.binary, KUBE_BUILD_HINT);
        tracing::debug!(pid = child.id(), port = self.port, "started kube-apiserver");
        self.child = Some(child);
    }

    fn wait_ready(&mut self) -> Result<(), StartFailure> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if !process::is_running(&mut self.child) {
                return Err(StartFailure {
                    message: format!(
                        "kube-apiserver exited during start-up; its log:\n{}",
                        process::log_tail(&self.log_path())
                    ),
                    port_conflict: process::port_taken(&self.log_path()),
                });
            }
            if self
                .get("/readyz", KubeUser::Admin)
                .is_some_and(|(code, _)| code == 200)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                process::kill(&mut self.child, "kube-apiserver");
                return Err(StartFailure {
                    message: format!(
                        "kube-apiserver was not ready within {READY_TIMEOUT:?}; its log:\n{}",
                        process::log_tail(&self.log_path())
                    ),
                    port_conflict: false,
                });
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    /// One `GET` as `user`: (HTTP status, body), or `None` if the server cannot be reached.
    pub fn get(&self, path: &str, user: KubeUser) -> Option<(u16, String)> {
        self.request(user, "GET", path, None)
    }

    /// One request as `user` with an optional body (`(content type, text)`): (HTTP
    /// status, body), or `None` if the server cannot be reached.
    pub fn request(
        &self,
        user: KubeUser,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
    ) -> Option<(u16, String)> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pki.ca_pem.as_bytes()).ok()?)
            .ok()?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from("127.0.0.1").ok()?;
        let connection = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let socket = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
        socket.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
        socket.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
        let mut tls = rustls::StreamOwned::new(connection, socket);
        let (content_type, text) = body.unwrap_or(("application/json", ""));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            self.port,
            user.token(),
            text.len()
        );
        tls.write_all(request.as_bytes()).ok()?;
        let mut response = Vec::new();
        let _ = tls.take(4 << 20).read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response).into_owned();
        let code = text.split(' ').nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        Some((code, body))
    }

    /// Creates or replaces the object `json` at `path` as the admin (server-side apply,
    /// forced), e.g. `/api/v1/namespaces/NAME` with a Namespace.
    ///
    /// # Panics
    ///
    /// Panics unless the apiserver answers 200 or 201; the message has its answer.
    pub fn apply(&self, path: &str, json: &str) {
        let path = format!("{path}?fieldManager=dtmdriver-tests&force=true");
        let answer = self.request(
            KubeUser::Admin,
            "PATCH",
            &path,
            Some(("application/apply-patch+yaml", json)),
        );
        assert!(
            matches!(answer, Some((200 | 201, _))),
            "kube-apiserver refused to apply {path}: {answer:?}"
        );
    }

    /// Deletes the object at `path` as the admin.
    ///
    /// # Panics
    ///
    /// Panics unless the apiserver answers 200 or 202.
    pub fn delete(&self, path: &str) {
        let answer = self.request(KubeUser::Admin, "DELETE", path, None);
        assert!(
            matches!(answer, Some((200 | 202, _))),
            "kube-apiserver refused to delete {path}: {answer:?}"
        );
    }

    /// Creates the namespace `name` (nothing runs that would: no controller does).
    pub fn create_namespace(&self, name: &str) {
        self.apply(
            &format!("/api/v1/namespaces/{name}"),
            &format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}"}}}}"#),
        );
    }

    /// Creates or replaces the EndpointSlice `name` of `service` in `namespace`, as the
    /// EndpointSlice controller would write it: `endpoints` are (address, ready), every
    /// endpoint serving, a not-ready one terminating; `address_type` is `IPv4`, `IPv6`
    /// or `FQDN`.
    pub fn put_slice(
        &self,
        namespace: &str,
        name: &str,
        service: &str,
        address_type: &str,
        endpoints: &[(&str, bool)],
        ports: &[u16],
    ) {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|(address, ready)| {
                format!(
                    r#"{{"addresses":["{address}"],"conditions":{{"ready":{ready},"serving":true,"terminating":{}}}}}"#,
                    !ready
                )
            })
            .collect();
        let ports: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!(r#"{{"name":"p{i}","port":{p},"protocol":"TCP"}}"#))
            .collect();
        let json = format!(
            r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{{"name":"{name}","namespace":"{namespace}","labels":{{"kubernetes.io/service-name":"{service}","endpointslice.kubernetes.io/managed-by":"dtmdriver-tests"}}}},"addressType":"{address_type}","endpoints":[{}],"ports":[{}]}}"#,
            endpoints.join(","),
            ports.join(",")
        );
        self.apply(&slice_path(namespace, name), &json);
    }

    /// Deletes the EndpointSlice `name` in `namespace`.
    pub fn delete_slice(&self, namespace: &str, name: &str) {
        self.delete(&slice_path(namespace, name));
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path of the CA certificate that signed the serving certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.pki.path("ca.pem")
    }

    /// Writes a kubeconfig for `user` (current context `test`, namespace `default`) and
    /// returns its path.
    pub fn kubeconfig(&self, user: KubeUser) -> PathBuf {
        self.kubeconfig_via(user, &self.url())
    }

    /// [`kubeconfig`](Self::kubeconfig) with another server URL (a proxy to this server
    /// on loopback, say; the serving certificate is for `127.0.0.1`).
    pub fn kubeconfig_via(&self, user: KubeUser, url: &str) -> PathBuf {
        let stem: String = url.chars().filter(char::is_ascii_digit).collect();
        let path = self.pki.path(&format!("kubeconfig-{}-{stem}", user.name()));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    \
             server: {}\n    certificate-authority: {}\nusers:\n- name: {}\n  user:\n    \
             token: {}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    \
             user: {}\ncurrent-context: test\n",
            url,
            self.ca_path().display(),
            user.name(),
            user.token(),
            user.name()
        );
        std::fs::write(&path, text).expect("write a kubeconfig");
        path
    }

    /// Writes what a pod's service-account mount holds (`token`, `ca.crt`, `namespace`)
    /// for `user` into a directory and returns it.
    pub fn service_account_dir(&self, user: KubeUser) -> PathBuf {
        let dir = self.pki.path(&format!("serviceaccount-{}", user.name()));
        std::fs::create_dir_all(&dir).expect("create a service-account directory");
        std::fs::write(dir.join("token"), user.token()).expect("write the token");
        std::fs::write(dir.join("ca.crt"), &self.pki.ca_pem).expect("write ca.crt");
        std::fs::write(dir.join("namespace"), "default").expect("write the namespace");
        dir
    }

    /// Compacts the apiserver's etcd to its newest revision: every watch that resumes
    /// from before now is refused as expired (410 Gone).
    pub fn compact(&self) {
        self.etcd.compact_to_head();
    }

    /// SIGKILLs the apiserver (etcd keeps running). Does nothing if it is not running.
    pub fn kill(&mut self) {
        process::kill(&mut self.child, "kube-apiserver");
    }

    /// Starts the apiserver again on the same port and waits until it is ready.
    ///
    /// # Panics
    ///
    /// Panics if it does not become ready; the message includes the end of its log.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        if let Err(failure) = self.wait_ready() {
            panic!("{}", failure.message);
        }
    }

    /// The end of the apiserver's log.
    pub fn log_tail(&self) -> String {
        process::log_tail(&self.log_path())
    }
}

fn slice_path(namespace: &str, name: &str) -> String {
    format!("/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{name}")
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            tracing::warn!(log = %self.log_tail(), "dropping kube-apiserver during a panic; last part of its log");
        }
        self.kill();
    }
}
