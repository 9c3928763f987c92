//! `vendpay serve`: the whole system in one process.
//!
//! [`Server::start`] wires, in this order: the Alipay side (the in-process sandbox, or the configured
//! gateway), the device key and admin token, then the store: either the SQLite store, the tokio timers
//! and refund queue, the [`Worker`] that drains them and [`rearm`] (so a restart picks up every stored
//! deadline and pending refund before the first request); or, with `--store aws`, DynamoDB and the SQS
//! pollers of [`crate::aws`]. Either way the ledger and the catalogue and inventory service
//! (`vendpay_app::inventory::Inventory`) run over the same store, so stock moves in the money's writes.
//! Finally the HTTP listener. Every request is turned into an
//! `http::Request<Bytes>` and answered by [`Api::handle`], the same code the Lambda functions run.
//!
//! In sandbox mode the listener also answers the sandbox's customer side (see [`crate::sandbox`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use http::header;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vendpay_alipay::{AlipayConfig, HttpGateway, PartnerId, Verifier};
use vendpay_alipay_sandbox::{
    RunningSandbox, Sandbox, SandboxConfig, TEST_ALIPAY_PUBLIC_KEY, TEST_MERCHANT_PRIVATE_KEY,
};
use vendpay_api::alipay::{Alipay, NotifyCheck};
use vendpay_api::auth::DeviceKey;
use vendpay_api::notify::NotifySettings;
use vendpay_api::reports::Reports;
use vendpay_api::{AdminAuth, Api, ApiParts};
use vendpay_app::inventory::Inventory;
use vendpay_app::{DeviceStore, FactStore, Ledger, RefundGateway};
use vendpay_domain::facts::AnalyticsKey;
use vendpay_domain::{Clock, SystemClock};
use vendpay_store_sqlite::{channels, rearm, SqliteStore, Worker};

use crate::aws::AwsResources;
use crate::config::{default_base_url, AlipayMode, Config, StoreConfig};
use crate::error::ServeError;
use crate::keyfile;
use crate::respond::{read_body, too_large, MAX_BODY_BYTES};
use crate::sandbox::{self, RefundLog, SandboxState, TradeJournal};

/// The partner id the in-process sandbox and its client share.
pub const SANDBOX_PARTNER_ID: &str = "2088000000000001";

/// The store in use, for the start-up banner.
pub enum ServerStore {
    Sqlite {
        store: SqliteStore,
        rearmed: vendpay_store_sqlite::RearmReport,
    },
    Aws(AwsResources),
}

/// How the device key was obtained, for the start-up banner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKeySource {
    Setting,
    File {
        path: std::path::PathBuf,
        created: bool,
    },
}

/// A running server. Dropping it without [`Server::shutdown`] aborts the HTTP task.
pub struct Server {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// Where notifications are sent back to (`PUBLIC_BASE_URL` or `http://<addr>`).
    pub public_base_url: String,
    pub admin_token: String,
    /// Where the token is kept when `ADMIN_TOKEN` was not set (0600, beside the database).
    pub admin_token_file: Option<PathBuf>,
    pub device_key_source: DeviceKeySource,
    /// The sandbox's `gateway.do`, in sandbox mode.
    pub sandbox_gateway_url: Option<String>,
    /// The Alipay gateway in use (sandbox or configured).
    pub gateway_url: String,
    pub store: ServerStore,
    /// In sandbox mode: how many trades of earlier runs the sandbox was given back (see
    /// [`TradeJournal`]), so their refunds still succeed there.
    pub sandbox_trades_restored: usize,
    http: Option<JoinHandle<std::io::Result<()>>>,
    stop: Option<oneshot::Sender<()>>,
    /// The refund worker (SQLite), or the queue pollers and the sweep (AWS).
    workers: Vec<JoinHandle<()>>,
    /// Kept so the sandbox serves for as long as the server lives.
    _sandbox: Option<RunningSandbox>,
}

impl Server {
    /// Builds everything and starts listening; returns once requests are being served. In order: the
    /// listener (so a busy port fails first), the Alipay side, the device key and admin token, the
    /// store with its workers, the API, the router.
    pub async fn start(config: Config) -> Result<Server, ServeError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| ServeError::Listen {
                addr: config.listen,
                reason: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| ServeError::Listen {
            addr: config.listen,
            reason: e.to_string(),
        })?;
        let public_base_url = config
            .public_base_url
            .clone()
            .unwrap_or_else(|| default_base_url(addr));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);

        let side = AlipaySide::start(&config).await?;
        let gateway_url = side.config.gateway_url.clone();
        let partner = side.config.partner.clone();
        let (device_key, device_key_source) = device_key(&config)?;
        let (admin_token, admin_token_file) = admin_token(&config)?;

        let http =
            vendpay_alipay::http_client().map_err(|e| ServeError::HttpClient(e.to_string()))?;
        let alipay = Arc::new(Alipay {
            gateway: HttpGateway::new(http, side.config.clone(), clock.clone()),
            merchant: Some(Arc::new(config.merchant.clone())),
        });
        // `/sandbox/refunds` logs the refunds of the SQLite mode's worker; with `--store aws` the Lambda
        // refund executor calls the Alipay client itself.
        let refund_log = side
            .sandbox
            .as_ref()
            .filter(|_| !config.is_aws())
            .map(|_| RefundLog::default());

        let stores = match &config.store {
            StoreConfig::Sqlite => {
                let analytics = config
                    .analytics_key
                    .clone()
                    .unwrap_or_else(|| device_key.analytics_key());
                start_sqlite(
                    &config,
                    clock.clone(),
                    alipay.clone(),
                    refund_log.as_ref(),
                    analytics,
                )
                .await?
            }
            StoreConfig::Aws(aws) => {
                let running =
                    crate::aws::start(aws, clock.clone(), alipay.clone(), &device_key).await?;
                Stores {
                    ledger: running.ledger,
                    inventory: running.inventory,
                    devices: running.devices,
                    store: ServerStore::Aws(running.resources),
                    workers: running.tasks,
                    facts: None,
                }
            }
        };
        let devices = stores.devices.clone();
        let api = Api::new(ApiParts {
            ledger: stores.ledger,
            inventory: stores.inventory,
            devices: stores.devices,
            device_key,
            admin: AdminAuth::Token(admin_token.clone()),
            qr: alipay.clone(),
            public_base_url: public_base_url.clone(),
            notify: NotifySettings {
                verifier: side.notify_verifier,
                partner,
                notify_verify: config
                    .notify_verify
                    .then(|| alipay.clone() as Arc<dyn NotifyCheck>),
            },
            reports: stores
                .facts
                .map(|facts| Reports::new(facts, config.report_tz.clone())),
        });

        // The sandbox's customer routes exist in sandbox mode only; everything else is the contract.
        let mut router = Router::new().fallback(api_route).with_state(api);
        let mut sandbox_gateway_url = None;
        let mut kept_sandbox = None;
        let mut sandbox_trades_restored = 0;
        if let Some(sb) = side.sandbox {
            sandbox_gateway_url = Some(sb.running.gateway_url());
            kept_sandbox = Some(sb.running);
            sandbox_trades_restored = sb.restored;
            router = router.merge(sandbox::routes(Arc::new(SandboxState {
                sandbox: sb.sandbox,
                devices,
                refunds: refund_log,
                journal: sb.journal,
            })));
        }

        let (stop, stopped) = oneshot::channel::<()>();
        let http = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    // A dropped sender also stops the server.
                    let _ = stopped.await;
                })
                .await
        });

        Ok(Server {
            addr,
            public_base_url,
            admin_token,
            admin_token_file,
            device_key_source,
            sandbox_gateway_url,
            gateway_url,
            store: stores.store,
            sandbox_trades_restored,
            http: Some(http),
            stop: Some(stop),
            workers: stores.workers,
            _sandbox: kept_sandbox,
        })
    }

    /// `http://<bound address>`, with a wildcard address replaced by loopback.
    pub fn local_url(&self) -> String {
        default_base_url(self.addr)
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        let mut this = self;
        let failed = match this.http.as_mut() {
            Some(http) => tokio::select! {
                () = signal => false,
                r = http => {
                    match r {
                        Ok(Ok(())) => tracing::warn!("the HTTP server stopped by itself"),
                        Ok(Err(e)) => tracing::error!(error = %e, "the HTTP server failed"),
                        Err(e) => tracing::error!(error = %e, "the HTTP server task failed"),
                    }
                    this.http = None;
                    true
                }
            },
            None => true,
        };
        if !failed {
            tracing::info!("shutting down: finishing requests in flight");
        }
        this.shutdown().await;
    }

    /// Stops accepting connections, lets requests in flight finish, then stops the workers. Every
    /// decision is already in the store, so whatever the worker had not done yet is re-armed at next
    /// start (SQLite), or is still a message on its queue (AWS).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(http) = self.http.take() {
            match http.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server ended with an error"),
                Err(e) => tracing::warn!(error = %e, "HTTP server task ended abnormally"),
            }
        }
        for w in &self.workers {
            w.abort();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(http) = &self.http {
            http.abort();
        }
        for w in &self.workers {
            w.abort();
        }
    }
}

/// The Alipay side: the configured gateway, or the in-process sandbox with its built-in test keys.
struct AlipaySide {
    config: Arc<AlipayConfig>,
    /// The keys again, for verifying notifications (a `Verifier` is not cloneable).
    notify_verifier: Arc<Verifier>,
    sandbox: Option<StartedSandbox>,
}

struct StartedSandbox {
    sandbox: Sandbox,
    running: RunningSandbox,
    journal: TradeJournal,
    /// Trades of earlier runs given back to the sandbox from the journal.
    restored: usize,
}

impl AlipaySide {
    async fn start(config: &Config) -> Result<AlipaySide, ServeError> {
        let AlipayMode::Gateway {
            config: gateway,
            notify_verifier,
        } = &config.alipay
        else {
            return AlipaySide::sandbox(config).await;
        };
        Ok(AlipaySide {
            config: gateway.clone(),
            notify_verifier: notify_verifier.clone(),
            sandbox: None,
        })
    }

    async fn sandbox(config: &Config) -> Result<AlipaySide, ServeError> {
        let partner =
            PartnerId::parse(SANDBOX_PARTNER_ID).map_err(|e| ServeError::Sandbox(e.reason))?;
        let sandbox = Sandbox::new(SandboxConfig::with_test_keys(partner))
            .map_err(|e| ServeError::Sandbox(e.to_string()))?;
        let journal = TradeJournal::for_db(&config.db);
        let restored = journal.restore(&sandbox).map_err(ServeError::Sandbox)?;
        let running = sandbox
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|e| ServeError::Sandbox(e.to_string()))?;
        let url = running.gateway_url();
        let lookup = |name: &str| -> Option<String> {
            match name {
                "ALIPAY_GATEWAY_URL" => Some(url.clone()),
                "ALIPAY_PARTNER_ID" => Some(SANDBOX_PARTNER_ID.to_owned()),
                "ALIPAY_SIGN_TYPE" => Some("RSA2".to_owned()),
                "ALIPAY_PRIVATE_KEY" => Some(TEST_MERCHANT_PRIVATE_KEY.to_owned()),
                "ALIPAY_PUBLIC_KEY" => Some(TEST_ALIPAY_PUBLIC_KEY.to_owned()),
                _ => None,
            }
        };
        let client =
            AlipayConfig::from_lookup(lookup).map_err(|e| ServeError::Sandbox(e.to_string()))?;
        let verifier = AlipayConfig::from_lookup(lookup)
            .map_err(|e| ServeError::Sandbox(e.to_string()))?
            .verifier;
        Ok(AlipaySide {
            config: Arc::new(client),
            notify_verifier: Arc::new(verifier),
            sandbox: Some(StartedSandbox {
                sandbox,
                running,
                journal,
                restored,
            }),
        })
    }
}

/// `DEVICE_KEY`, or the key file beside the database (made on first start).
fn device_key(config: &Config) -> Result<(DeviceKey, DeviceKeySource), ServeError> {
    if let Some(k) = &config.device_key {
        return Ok((k.clone(), DeviceKeySource::Setting));
    }
    let path = keyfile::path_for(&config.db);
    let db_existed = config.db.exists();
    let (key, origin) = keyfile::load_or_create(&config.db)?;
    let created = origin == keyfile::Origin::Created;
    if created && db_existed {
        tracing::warn!(key_file = %path.display(), db = %config.db.display(),
            "the database exists but its device key file did not: a new key was made, so the secrets of machines registered before no longer verify; restore the old key file or set DEVICE_KEY");
    }
    Ok((key, DeviceKeySource::File { path, created }))
}

/// `ADMIN_TOKEN`, or the token file beside the database (made on first start).
fn admin_token(config: &Config) -> Result<(String, Option<PathBuf>), ServeError> {
    if let Some(t) = &config.admin_token {
        return Ok((t.clone(), None));
    }
    let (token, _) =
        keyfile::admin_token(&config.db).map_err(|e| ServeError::AdminToken(e.to_string()))?;
    Ok((token, Some(keyfile::admin_token_path_for(&config.db))))
}

/// What a store mode gives the server.
struct Stores {
    ledger: Ledger,
    /// Catalogue and inventory (`docs/contract.md`, “Catalogue and inventory”), over the same store as the ledger.
    inventory: Inventory,
    devices: Arc<dyn DeviceStore>,
    store: ServerStore,
    /// The refund worker (SQLite), or the queue pollers and the sweep (AWS).
    workers: Vec<JoinHandle<()>>,
    /// The sales facts the report route reads (SQLite; on AWS they go to S3 and Athena).
    facts: Option<Arc<dyn FactStore>>,
}

/// The SQLite store, the tokio timers and refund queue, the worker that drains them, and [`rearm`]
/// so every stored deadline and pending refund is picked up before the first request.
async fn start_sqlite(
    config: &Config,
    clock: Arc<dyn Clock>,
    alipay: Arc<Alipay>,
    refund_log: Option<&RefundLog>,
    analytics: AnalyticsKey,
) -> Result<Stores, ServeError> {
    let db_name = config.db.display().to_string();
    let store = SqliteStore::open(&config.db)
        .await
        .map_err(|e| ServeError::Store {
            path: db_name.clone(),
            reason: e.to_string(),
        })?;
    let (scheduler, queue, receivers) = channels(clock.clone());
    let ledger = Ledger::new(
        Arc::new(store.clone()),
        Arc::new(scheduler.clone()),
        Arc::new(queue.clone()),
        clock.clone(),
        config.windows,
    )
    .with_analytics_key(analytics);
    let refunds: Arc<dyn RefundGateway> = match refund_log {
        Some(log) => Arc::new(sandbox::Recording {
            inner: alipay,
            log: log.clone(),
            clock,
        }),
        None => alipay,
    };
    let worker = Worker::new(ledger.clone(), refunds).spawn(receivers);
    let rearmed = rearm(&store, &scheduler, &queue)
        .await
        .map_err(|e| ServeError::Rearm {
            path: db_name,
            reason: e.to_string(),
        })?;
    let shared = Arc::new(store.clone());
    Ok(Stores {
        ledger,
        inventory: Inventory::new(shared.clone(), shared.clone(), shared.clone()),
        devices: shared,
        facts: Some(Arc::new(store.clone())),
        store: ServerStore::Sqlite { store, rearmed },
        workers: vec![worker],
    })
}

/// Every route of the contract (see `docs/contract.md`): the request becomes an
/// `http::Request<Bytes>` for [`Api::handle`].
async fn api_route(State(api): State<Api>, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let res = api.handle(http::Request::from_parts(parts, bytes)).await;
    tracing::debug!(%method, %path, status = res.status().as_u16(), elapsed_ms = started.elapsed().as_secs_f64() * 1000.0, "request");
    res.map(Body::from)
}
