//! Putting the pieces together: opening the database (migrations applied, offerings synced),
//! the token key, the templates, the transport; and running the web server with its workers.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::bounces::Recorder;
use crate::clock::Clock;
use crate::config::{Config, TransportKind, redact_url_password};
use crate::courses::Courses;
use crate::delivery::{Alerts, BounceMailbox, PendingSignups, Scheduler, Worker};
use crate::domain::TokenKey;
use crate::links::Links;
use crate::mail::{Composer, Dkim, Templates, Transport};
use crate::metrics::Metrics;
use crate::store::{DeclaredOffering, Store};
use crate::web::{AppState, HttpsFetch, SnsFetch, router};

/// The parts every command that touches the database needs.
#[derive(Clone)]
pub struct Runtime {
    pub config: Config,
    pub store: Store,
    pub clock: Clock,
    /// The configured courses, built once and shared by the scheduler, the web and the CLI.
    pub courses: Courses,
    /// The DKIM keys, read once here: a missing or bad key stops the start.
    pub dkim: Dkim,
    /// What the web and the workers count; off unless `[metrics] bind` is set.
    pub metrics: Metrics,
}

impl Runtime {
    /// Connects, applies pending migrations and mirrors the configured offerings, so a fresh
    /// data folder works with any command.
    pub async fn open(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let dkim = Dkim::from_config(&config)?;
        create_private_dir(&config.data_dir)
            .with_context(|| format!("cannot create data folder {}", config.data_dir.display()))?;
        warn_if_open_to_others(&config.data_dir);
        for warning in config.alignment_warnings() {
            tracing::warn!("{warning}");
        }
        let store = Store::connect_with_timeout(
            &config.database.url,
            config.database.max_connections,
            std::time::Duration::from_secs(config.database.connect_timeout_seconds.max(1)),
        )
        .await
        .with_context(|| {
            format!(
                "cannot open database {}",
                redact_url_password(&config.database.url)
            )
        })?
        .with_message_id_domain(&config.message_id_domain());
        store.migrate().await.context("cannot apply migrations")?;
        let declared: Vec<DeclaredOffering<'_>> = config
            .offerings
            .iter()
            .map(|o| DeclaredOffering {
                slug: o.slug.as_str(),
                name: &o.name,
                description: &o.description,
                kind: o.kind,
                public: o.public,
            })
            .collect();
        store
            .sync_offerings(&declared, clock.now_ms())
            .await
            .context("cannot record the configured offerings")?;
        let metrics = if config.metrics.bind.is_some() {
            Metrics::on()
        } else {
            Metrics::off()
        };
        Ok(Self {
            courses: Courses::from_config(&config),
            dkim,
            metrics,
            config,
            store,
            clock,
        })
    }

    /// The configured token key, or the one in `data_dir/token.key`, created on first use.
    pub fn token_key(&self) -> anyhow::Result<TokenKey> {
        if let Some(key) = &self.config.tokens.key {
            return Ok(key.clone());
        }
        load_or_create_key(&self.config.data_dir.join("token.key"))
    }

    /// The keys that signed links before the current one (`tokens.previous_keys`).
    pub fn previous_token_keys(&self) -> Vec<TokenKey> {
        self.config.tokens.previous_keys.clone()
    }

    /// Links signed with the current key, accepted under the current and previous keys.
    pub fn links(&self) -> anyhow::Result<Links> {
        Ok(Links::new(
            self.config.base_url(),
            self.token_key()?,
            self.config.tokens.confirm_ttl_hours,
        )
        .with_previous_keys(self.previous_token_keys()))
    }

    /// The embedded templates with the owner's overrides.
    pub fn templates(&self) -> anyhow::Result<Arc<Templates>> {
        Ok(Arc::new(Templates::load(
            self.config.templates_dir().as_deref(),
        )?))
    }

    /// The scheduler over this runtime's store, clock and courses, reminding and forgetting
    /// signups nobody confirmed.
    pub fn scheduler(&self) -> Scheduler {
        let scheduler = Scheduler::new(
            self.store.clone(),
            self.clock.clone(),
            &self.config,
            self.courses.clone(),
        );
        match self.links() {
            Ok(links) => scheduler.with_pending_signups(PendingSignups::new(&self.config, links)),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "no token key: signups nobody confirmed are neither reminded nor deleted"
                );
                scheduler
            }
        }
    }

    /// The poller of `[bounces.imap]`, when a mailbox is configured.
    pub fn bounce_mailbox(&self) -> anyhow::Result<Option<BounceMailbox>> {
        if !self.config.bounces.imap.enabled() {
            return Ok(None);
        }
        let recorder = Recorder::new(
            self.store.clone(),
            self.links()?,
            self.clock.clone(),
            &self.config,
        );
        Ok(Some(BounceMailbox::new(
            self.config.bounces.imap.clone(),
            recorder,
        )))
    }

    /// The owner's alerts, emailed through `transport`.
    pub fn alerts(&self, transport: Transport) -> Alerts {
        Alerts::new(
            self.store.clone(),
            self.clock.clone(),
            &self.config,
            transport,
        )
    }

    /// Renders emails with the configured sender, site and list headers.
    pub fn composer(&self, templates: Arc<Templates>, links: Links) -> anyhow::Result<Composer> {
        let from = self.config.mail.from.clone();
        let mailto = Some(self.config.mail.unsubscribe_mailto.clone()).filter(|m| !m.is_empty());
        Ok(Composer::new(
            templates,
            links,
            from,
            &self.config.site.name,
            &self.config.message_id_domain(),
            mailto,
        )
        .with_return_path(self.config.mail.return_path.clone())
        .with_archives(self.config.archived_offerings()))
    }

    /// The configured transport, signing with the DKIM keys.
    pub fn transport(&self) -> anyhow::Result<Transport> {
        Ok(Transport::from_config(&self.config)?.with_dkim(self.dkim.clone()))
    }

    /// A delivery worker over the configured transport.
    pub fn worker(&self, templates: Arc<Templates>, links: Links) -> anyhow::Result<Worker> {
        let composer = self.composer(templates, links)?;
        let transport = self.transport()?;
        Ok(Worker::new(
            self.store.clone(),
            composer,
            transport,
            self.clock.clone(),
            self.config.worker.clone(),
            match self.config.mail.transport {
                TransportKind::Smtp => self.config.smtp.rate_per_second,
                TransportKind::File => 0,
            },
            self.metrics.clone(),
        ))
    }
}

/// Creates the data folder (and any missing parent) for its owner only: it holds the token key,
/// the SQLite database and the outbox, all of them about subscribers. An existing folder keeps
/// the permissions it has.
pub(crate) fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Warns when other users can enter the data folder (it existed before with wide permissions:
/// an existing folder keeps them). The files Sangha creates in it are its owner's only.
fn warn_if_open_to_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "the data folder {} is open to other users of this machine (mode {:o}); \
                 run `chmod 700` on it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
}

/// Reads the key file, or writes a new random key with owner-only permissions. Two processes
/// starting at once agree: only one can create the file.
fn load_or_create_key(path: &Path) -> anyhow::Result<TokenKey> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return TokenKey::from_base64(&text)
            .map_err(|e| anyhow::anyhow!("token key file {}: {e}", path.display()));
    }
    let key = TokenKey::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(key.to_base64().as_bytes())
                .and_then(|_| file.sync_all())
                .with_context(|| format!("cannot write token key {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a new token key");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key(path),
        Err(e) => Err(e).with_context(|| format!("cannot create token key {}", path.display())),
    }
}

/// The web server with its workers, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    worker: Option<Worker>,
    scheduler: Option<Scheduler>,
    bounce_mailbox: Option<BounceMailbox>,
    alerts: Option<Alerts>,
    wake: Arc<Notify>,
    /// The listener of `[metrics] bind`, when set: `GET /metrics`, apart from the site.
    metrics: Option<MetricsEndpoint>,
}

/// `GET /metrics` on its own address, bound and ready to serve.
pub struct MetricsEndpoint {
    listener: TcpListener,
    router: axum::Router,
}

impl MetricsEndpoint {
    /// Binds `[metrics] bind`; `None` when it is empty.
    pub async fn bind(runtime: &Runtime) -> anyhow::Result<Option<Self>> {
        let Some(bind) = runtime.config.metrics.bind else {
            return Ok(None);
        };
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind} (metrics.bind)"))?;
        let router = crate::metrics::router(
            runtime.metrics.clone(),
            runtime.store.clone(),
            runtime.clock.clone(),
        );
        Ok(Some(Self { listener, router }))
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// Serves scrapes until `stop` turns true.
    pub fn spawn(
        self,
        timeouts: crate::web::ConnectionTimeouts,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<std::io::Result<()>> {
        tracing::info!(address = %self.local_addr(), "metrics at /metrics");
        tokio::spawn(crate::web::serve(
            self.listener,
            self.router,
            timeouts,
            async move {
                let _ = stop.wait_for(|stop| *stop).await;
            },
        ))
    }
}

impl Application {
    /// Opens everything and binds the listener (port 0 picks a free port, for tests).
    pub async fn build(config: Config, clock: Clock, with_worker: bool) -> anyhow::Result<Self> {
        Self::build_with(config, clock, with_worker, Arc::new(HttpsFetch::new())).await
    }

    /// As [`Application::build`], with what the SES webhook fetches Amazon SNS URLs with
    /// (tests serve their own certificates).
    pub async fn build_with(
        config: Config,
        clock: Clock,
        with_worker: bool,
        sns_fetch: Arc<dyn SnsFetch>,
    ) -> anyhow::Result<Self> {
        let bind = config.server.bind;
        let runtime = Runtime::open(config, clock).await?;
        let templates = runtime.templates()?;
        let links = runtime.links()?;
        let worker = if with_worker {
            Some(runtime.worker(templates.clone(), links.clone())?)
        } else {
            None
        };
        let scheduler = runtime.scheduler();
        let bounce_mailbox = runtime.bounce_mailbox()?;
        // Alerts go out through the workers' transport: one pool of relay connections.
        let transport = match &worker {
            Some(worker) => worker.transport().clone(),
            None => runtime.transport()?,
        };
        let alerts = runtime.alerts(transport);
        let metrics = MetricsEndpoint::bind(&runtime).await?;
        let wake = Arc::new(Notify::new());
        let state = AppState::new(
            runtime.config,
            runtime.store,
            runtime.courses,
            templates,
            links,
            runtime.clock,
            wake.clone(),
            sns_fetch,
            runtime.metrics.clone(),
        );
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("cannot listen on {bind}"))?;
        Ok(Self {
            listener,
            state,
            worker,
            scheduler: Some(scheduler),
            bounce_mailbox,
            alerts: Some(alerts),
            wake,
            metrics,
        })
    }

    /// Runs without the scheduler loop: for tests that step a scheduler themselves, so two
    /// never race over the same moment of a manual clock.
    pub fn without_scheduler(mut self) -> Self {
        self.scheduler = None;
        self.alerts = None;
        self
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// The address `GET /metrics` answers on, when `[metrics] bind` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsEndpoint::local_addr)
    }

    /// The web state, for tests that look inside.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops within `worker.shutdown_grace_seconds`:
    ///
    /// ```text
    ///  shutdown ──► no new claims, no new fan-out ──► in-flight messages finish (or are
    ///     │                                            dropped when the grace ends)
    ///     └──── the site keeps answering ────────────────────────────┴──► stops answering,
    ///                                                     requests in flight finish within
    ///                                                     what is left of the grace
    /// ```
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let grace =
            std::time::Duration::from_secs(self.state.config().worker.shutdown_grace_seconds);
        // Two stops: taking work ends at the signal, answering the site only at the end.
        let (stop_work_tx, stop_work) = watch::channel(false);
        let (stop_site_tx, stop_site) = watch::channel(false);
        let checkpoints = self
            .state
            .store()
            .checkpoint_in_background(stop_site.clone())
            .await
            .context("cannot set up WAL checkpoints")?;
        let worker = self
            .worker
            .map(|w| tokio::spawn(w.run(stop_work.clone(), self.wake.clone())));
        let interval =
            std::time::Duration::from_millis(self.state.config().worker.poll_interval_ms);
        let scheduler = self.scheduler.map(|scheduler| {
            tokio::spawn(scheduler.run(interval, stop_work.clone(), self.wake.clone()))
        });
        let bounce_mailbox = self
            .bounce_mailbox
            .map(|mailbox| tokio::spawn(mailbox.run(stop_work.clone())));
        let alerts = self
            .alerts
            .map(|alerts| tokio::spawn(alerts.run(stop_work.clone())));
        let app = router(self.state.clone());
        let mut server_stop = stop_site.clone();
        let timeouts = crate::web::ConnectionTimeouts::from_config(&self.state.config().server);
        // Scrapes are answered until the site stops, so the last counts can still be read.
        let metrics = self
            .metrics
            .map(|endpoint| endpoint.spawn(timeouts, stop_site.clone()));
        let mut server = tokio::spawn(crate::web::serve(
            self.listener,
            app,
            timeouts,
            async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            },
        ));
        let server_ended = tokio::select! {
            _ = shutdown => None,
            ended = &mut server => Some(ended),
        };
        let deadline = tokio::time::Instant::now() + grace;
        let _ = stop_work_tx.send(true);
        // The worker bounds its own stop by the grace.
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        if let Some(mut scheduler) = scheduler
            && tokio::time::timeout_at(deadline, &mut scheduler)
                .await
                .is_err()
        {
            // Its fan-out is one transaction per batch: what it had not committed is redone.
            scheduler.abort();
        }
        if let Some(mut mailbox) = bounce_mailbox
            && tokio::time::timeout_at(deadline, &mut mailbox)
                .await
                .is_err()
        {
            // A message recorded but not yet moved is read again, and known, at the next start.
            mailbox.abort();
        }
        if let Some(mut alerts) = alerts
            && tokio::time::timeout_at(deadline, &mut alerts)
                .await
                .is_err()
        {
            // An alert whose email was under way is claimed again once its lease runs out.
            alerts.abort();
        }
        let _ = stop_site_tx.send(true);
        let result = match server_ended {
            Some(ended) => ended,
            None => match tokio::time::timeout_at(deadline, &mut server).await {
                Ok(ended) => ended,
                Err(_) => {
                    tracing::warn!(
                        "requests still in flight when the shutdown grace ended were cut off"
                    );
                    server.abort();
                    Ok(Ok(()))
                }
            },
        };
        if let Some(checkpoints) = checkpoints {
            let _ = checkpoints.await;
        }
        if let Some(mut metrics) = metrics
            && tokio::time::timeout_at(deadline, &mut metrics)
                .await
                .is_err()
        {
            metrics.abort();
        }
        // Connections an aborted request still holds are dropped with the process.
        let _ = tokio::time::timeout_at(
            deadline.max(tokio::time::Instant::now() + std::time::Duration::from_secs(1)),
            self.state.store().close(),
        )
        .await;
        result
            .context("web server task failed")?
            .context("web server failed")
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
