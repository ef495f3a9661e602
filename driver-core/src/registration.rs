//! The handle of a live registration: [`Registration`].
//!
//! Contract: the instance stays in the registry while the handle lives (its keeper task
//! renews it and reports its state, [`RegistrationState`]); dropping the handle removes
//! it in the background, [`Registration::deregister`] removes it and waits. Registrars
//! ([`crate::resolve::Registrar`]) hand it out; it depends on nothing else, so the
//! resolver contract can name it without the driver registry.

use std::future::Future;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::health::{HealthReporter, RegistrationState};

/// A live registration. Dropping it stops the keep-alive and removes the instance in the
/// background; [`deregister`](Registration::deregister) does the same and waits for the
/// removal to finish, which is what a process should do before it exits.
///
/// While it lives, [`health`](Registration::health) and
/// [`watch_health`](Registration::watch_health) tell whether the registry holds the
/// instance (see [`RegistrationState`]): a keeper never fails silently.
///
/// ```
/// use dtmdriver_core::{Registration, RegistrationState};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registration = Registration::noop("", "127.0.0.1:8080");
/// let mut health = registration.watch_health();
/// assert!(registration.health().is_live());
/// // e.g. in a readiness task: report unhealthy while the registration is not live.
/// tokio::spawn(async move {
///     while health.changed().await.is_ok() {
///         let live = health.borrow_and_update().is_live();
///         println!("registered: {live}");
///     }
/// });
/// registration.deregister().await.unwrap();
/// # }
/// ```
#[must_use = "dropping a Registration deregisters the service"]
#[derive(Debug)]
pub struct Registration {
    target: String,
    endpoint: String,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<()>>>,
    health: HealthReporter,
}

impl Registration {
    /// A registration that holds nothing (the `default` driver, an empty target). It is
    /// [`Live`](RegistrationState::Live) until deregistered or dropped: there is nothing
    /// that could fail.
    pub fn noop(target: &str, endpoint: &str) -> Self {
        Self {
            target: target.to_string(),
            endpoint: endpoint.to_string(),
            stop: CancellationToken::new(),
            task: None,
            health: HealthReporter::new(),
        }
    }

    /// Runs `keep` in a task: it keeps the instance registered until the token it is
    /// given is cancelled, then removes the instance and returns. Registrars call this
    /// after the instance was first written, so the handle means "registered". The state
    /// is [`Live`](RegistrationState::Live) until the task ends; a keeper that can tell
    /// when it fails uses [`spawn_with_health`](Self::spawn_with_health) instead.
    pub fn spawn<F, Fut>(target: &str, endpoint: &str, keep: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        Self::spawn_with_health(target, endpoint, |stop, _| keep(stop))
    }

    /// Like [`spawn`](Self::spawn), and `keep` reports through the [`HealthReporter`] it
    /// is given when keeping the instance fails and when it holds again. The state turns
    /// [`Stopped`](RegistrationState::Stopped) when `keep` returns.
    ///
    /// ```
    /// use dtmdriver_core::{Registration, RegistrationState};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let registration = Registration::spawn_with_health("my://registry/svc", "10.0.0.5:80", |stop, health| async move {
    ///     health.retrying("the registry refused the heartbeat; retrying");
    ///     stop.cancelled().await;
    ///     Ok(())
    /// });
    /// let mut state = registration.watch_health();
    /// state.wait_for(|s| matches!(s, RegistrationState::Retrying { .. })).await.unwrap();
    /// registration.deregister().await.unwrap();
    /// assert_eq!(*state.borrow(), RegistrationState::Stopped);
    /// # }
    /// ```
    pub fn spawn_with_health<F, Fut>(target: &str, endpoint: &str, keep: F) -> Self
    where
        F: FnOnce(CancellationToken, HealthReporter) -> Fut,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let health = HealthReporter::new();
        let kept = keep(stop.clone(), health.clone());
        let reporter = health.clone();
        let task = tokio::spawn(async move {
            let result = kept.await;
            reporter.stopped();
            result
        });
        Self {
            target: target.to_string(),
            endpoint: endpoint.to_string(),
            stop,
            task: Some(task),
            health,
        }
    }

    /// The target registered at.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The endpoint registered.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether the registry holds the instance now; see [`RegistrationState`].
    pub fn health(&self) -> RegistrationState {
        self.health.state()
    }

    /// A receiver of the state's changes, for a task that reports health. It outlives
    /// the handle and then reads [`Stopped`](RegistrationState::Stopped).
    pub fn watch_health(&self) -> watch::Receiver<RegistrationState> {
        self.health.subscribe()
    }

    /// Removes the instance and waits until the registry confirmed it.
    pub async fn deregister(mut self) -> Result<()> {
        self.stop.cancel();
        let result = match self.task.take() {
            None => Ok(()),
            Some(task) => task.await.map_err(|e| Error::Registry {
                target: self.target.clone(),
                message: format!("the registration task failed: {e}"),
            })?,
        };
        self.health.stopped();
        result
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop.cancel();
        if self.task.is_none() {
            self.health.stopped();
        }
    }
}
