//! vendpay's HTTP contract (see `docs/contract.md`) as plain async functions from
//! `http::Request<Bytes>` to `http::Response<Bytes>`, over the ports of `vendpay-app`.
//!
//! The Lambda functions (through `lambda_http`) and the local server (through axum) both convert their
//! requests to these types and call [`Api`], so the very same code answers in both places.
//!
//! - [`auth`]: machine request signatures and the admin token.
//! - [`input`] / [`views`]: JSON in and out, with precise errors ([`error`]).
//! - [`label`]: the printable SVG label.
//! - [`notify`]: Alipay's payment notifications; [`alipay`]: the adapters from the ports to Alipay.

pub mod alipay;
pub mod auth;
pub mod error;
pub mod input;
pub mod label;
pub mod notify;
pub mod queued;
pub mod reports;
pub mod settings;
pub mod views;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use vendpay_app::inventory::Inventory;
use vendpay_app::{DeviceRecord, DeviceStore, Ledger, QrCode};
use vendpay_domain::inventory::LOW_SHARE;
use vendpay_domain::{
    Currency, DeviceId, Mode, OrderId, PurchaseRequest, RequestId, SessionId, Slot,
};

pub use auth::DeviceKey;
pub use error::ApiError;
pub use queued::QueuedRequest;

/// The largest request body any edge accepts (the local server and the Lambda functions); larger ones
/// are answered 413. Every route of the contract takes a small JSON object or an Alipay form (a few
/// hundred bytes), far below this.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How operators authenticate on `/admin/...`.
#[derive(Clone)]
pub enum AdminAuth {
    /// `Authorization: Bearer <token>` (the local server, or a deployment without IAM auth).
    Token(String),
    /// API Gateway has already checked IAM credentials (`AWS_IAM` authorizer on the admin routes).
    Iam,
}

/// Why Alipay did not give a QR code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProvisionError {
    pub retryable: bool,
    pub message: String,
}

/// Creates a machine's merchant QR code at Alipay (`alipay.commerce.qrcode.create`, store id = device id,
/// so a repeat returns the same code).
#[async_trait]
pub trait QrProvisioner: Send + Sync {
    async fn create(
        &self,
        device: &DeviceRecord,
        notify_url: &str,
    ) -> Result<QrCode, ProvisionError>;
}

/// What the routes are built from, once at start-up; [`Api::new`] splits it into the three route groups.
pub struct ApiParts {
    pub ledger: Ledger,
    /// Catalogue and inventory (`docs/contract.md`, “Catalogue and inventory”), over the same store as the ledger.
    pub inventory: Inventory,
    pub devices: Arc<dyn DeviceStore>,
    pub device_key: DeviceKey,
    pub admin: AdminAuth,
    pub qr: Arc<dyn QrProvisioner>,
    /// `PUBLIC_BASE_URL`: where Alipay reaches us; notify URLs are built from it.
    pub public_base_url: String,
    pub notify: notify::NotifySettings,
    /// The sales report's facts (the embedded store); `None` on AWS, where Athena serves it.
    pub reports: Option<reports::Reports>,
}

/// The machine routes, `/devices/{id}/...` (the `device-api` function).
#[derive(Clone)]
pub struct DeviceRoutes {
    pub ledger: Ledger,
    pub inventory: Inventory,
    pub devices: Arc<dyn DeviceStore>,
    pub device_key: DeviceKey,
}

/// The operator routes, `/admin/...` (the `qr-provision` function).
#[derive(Clone)]
pub struct AdminRoutes {
    pub ledger: Ledger,
    pub inventory: Inventory,
    pub devices: Arc<dyn DeviceStore>,
    pub device_key: DeviceKey,
    pub admin: AdminAuth,
    pub qr: Arc<dyn QrProvisioner>,
    /// `PUBLIC_BASE_URL`: where Alipay reaches us; notify URLs are built from it.
    pub public_base_url: String,
    /// `GET /admin/reports/sales`: the facts to report on, where this process has them.
    pub reports: Option<reports::Reports>,
}

/// `POST /alipay/notify/{device_id}` (the `alipay-notify` function).
#[derive(Clone)]
pub struct NotifyRoute {
    pub ledger: Ledger,
    pub devices: Arc<dyn DeviceStore>,
    pub settings: notify::NotifySettings,
}

/// Every route of the contract (see `docs/contract.md`), as the local server serves them: each
/// Lambda function serves one group.
#[derive(Clone)]
pub struct Api {
    pub device: DeviceRoutes,
    pub admin: AdminRoutes,
    pub notify: NotifyRoute,
}

/// Set by the Lambda adapter when API Gateway authenticated the caller with IAM (SigV4): the caller's
/// ARN. With [`AdminAuth::Iam`] an admin request without it is refused, so a route deployed without
/// the IAM authorizer by mistake is closed, not open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IamCaller(pub String);

fn json_response(status: StatusCode, value: &Value) -> Response<Bytes> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Bytes::from(value.to_string()))
        .unwrap_or_else(|_| Response::new(Bytes::new()))
}

fn ok(value: &Value) -> Result<Response<Bytes>, ApiError> {
    Ok(json_response(StatusCode::OK, value))
}

fn unknown_device(raw: &str) -> ApiError {
    ApiError::new(404, "unknown_device", format!("unknown device {raw:?}"))
}

/// A device id of an admin path; one that cannot be a device id is as unknown as any other (404).
fn device_id(raw: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(raw).map_err(|_| unknown_device(raw))
}

fn segments(path: &str) -> Vec<&str> {
    path.trim_matches('/').split('/').collect()
}

impl Api {
    pub fn new(parts: ApiParts) -> Api {
        let ApiParts {
            ledger,
            inventory,
            devices,
            device_key,
            admin,
            qr,
            public_base_url,
            notify,
            reports,
        } = parts;
        Api {
            device: DeviceRoutes {
                ledger: ledger.clone(),
                inventory: inventory.clone(),
                devices: devices.clone(),
                device_key: device_key.clone(),
            },
            admin: AdminRoutes {
                ledger: ledger.clone(),
                inventory,
                devices: devices.clone(),
                device_key,
                admin,
                qr,
                public_base_url,
                reports,
            },
            notify: NotifyRoute {
                ledger,
                devices,
                settings: notify,
            },
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.device.ledger
    }

    /// Answers any route of the contract (see `docs/contract.md`).
    pub async fn handle(&self, req: Request<Bytes>) -> Response<Bytes> {
        match segments(req.uri().path()).first() {
            Some(&"alipay") => self.notify.handle(&req).await,
            Some(&"devices") => self.device.handle(&req).await,
            Some(&"admin") => self.admin.handle(&req).await,
            _ => ApiError::not_found(format!("no route {}", req.uri().path())).into_response(),
        }
    }
}

impl NotifyRoute {
    /// `POST /alipay/notify/{device_id}`; any other path is 404.
    pub async fn handle(&self, req: &Request<Bytes>) -> Response<Bytes> {
        let segs = segments(req.uri().path());
        let (Some(&"alipay"), Some(&"notify"), Some(device), None) =
            (segs.first(), segs.get(1), segs.get(2), segs.get(3))
        else {
            return ApiError::not_found(format!("no route {}", req.uri().path())).into_response();
        };
        if req.method() != Method::POST {
            return ApiError::new(405, "method_not_allowed", "Alipay notifications are POSTed")
                .into_response();
        }
        self.notify(device, req.body()).await
    }

    /// Answers `success` once the payment is durably recorded.
    pub async fn notify(&self, device: &str, body: &[u8]) -> Response<Bytes> {
        notify::handle(&self.settings, &self.ledger, &*self.devices, device, body).await
    }
}

impl DeviceRoutes {
    /// Answers a machine request received now.
    pub async fn handle(&self, req: &Request<Bytes>) -> Response<Bytes> {
        self.route(req, self.ledger.now())
            .await
            .unwrap_or_else(ApiError::into_response)
    }

    /// The machine routes, `/devices/{id}/...`, after checking the request's signature, whose
    /// timestamp must be within ±300 s of `received_at` (now over HTTP; when the queue received it for a
    /// machine publishing through a broker).
    pub async fn route(
        &self,
        req: &Request<Bytes>,
        received_at: vendpay_domain::Timestamp,
    ) -> Result<Response<Bytes>, ApiError> {
        let path = req.uri().path();
        let segs = segments(path);
        let (Some(&"devices"), Some(raw_id)) = (segs.first(), segs.get(1)) else {
            return Err(ApiError::not_found(format!("no route {path}")));
        };
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let signed = auth::SignedRequest {
            device_header: header("x-device-id"),
            timestamp: header("x-timestamp"),
            signature: header("x-signature"),
            method: req.method().as_str(),
            path_and_query: req.uri().path_and_query().map_or(path, |p| p.as_str()),
            body: req.body(),
        };
        let refused = |e: auth::AuthError| {
            tracing::info!(device = %raw_id, reason = %e, "device request refused");
            ApiError::new(e.status(), e.code(), e.to_string())
        };
        // Stale, replayed and unsigned requests cost no storage read.
        let envelope = auth::check_envelope(raw_id, &signed, received_at).map_err(refused)?;
        let record = match DeviceId::parse(*raw_id) {
            Ok(id) => self
                .devices
                .device(&id)
                .await
                .map_err(vendpay_app::AppError::from)?,
            Err(_) => None,
        };
        let secret = record
            .as_ref()
            .and_then(|r| self.device_key.secret(&r.device.id, &r.credential));
        envelope
            .check_signature(&signed, secret.as_deref())
            .map_err(refused)?;
        let Some(record) = record else {
            return Err(ApiError::new(401, "unknown_device", "unknown device"));
        };
        let device = &record.device;
        let id = &device.id;
        let m = req.method();
        match (m, &segs[2..]) {
            (&Method::GET, ["session"]) => ok(&views::machine_status(
                self.ledger.current(id).await?.as_ref(),
            )),
            (&Method::POST, ["purchases"]) => {
                let body = input::object(req.body())?;
                let purchase = PurchaseRequest {
                    request_id: input::parsed::<RequestId>(&body, "request_id")?,
                    slot: input::parsed::<Slot>(&body, "slot")?,
                    price: input::optional_price(&body, "price", device.currency)?,
                    session: input::optional_parsed::<SessionId>(&body, "session_id")?,
                };
                let answer = self.ledger.purchase_in(id, &purchase).await?;
                ok(&views::purchase_answer(&answer))
            }
            (&Method::POST, ["purchases", request, "result"]) => {
                let request_id = RequestId::parse(*request).map_err(|e| {
                    ApiError::new(
                        404,
                        "unknown_purchase",
                        format!("no purchase {request:?}: {e}"),
                    )
                })?;
                let body = input::object(req.body())?;
                let delivered = input::boolean(&body, "delivered")?;
                let session = self.ledger.vend(id, &request_id, delivered).await?;
                ok(&views::session(&session))
            }
            (&Method::POST, ["orders"]) => {
                let body = input::object(req.body())?;
                let order_id = input::parsed::<OrderId>(&body, "order_id")?;
                let slot = input::parsed::<Slot>(&body, "slot")?;
                let price = input::optional_price(&body, "price", device.currency)?;
                let session = self.ledger.order(id, &order_id, &slot, price).await?;
                ok(&views::session(&session))
            }
            (&Method::POST, ["session", "end"]) => {
                let body = input::object(req.body())?;
                let expected = input::optional_parsed::<SessionId>(&body, "session_id")?;
                let session = self.ledger.end_session(id, expected.as_ref()).await?;
                ok(&views::session(&session))
            }
            // The machine's own count of its slots (as a restock: only slots of its slot map), taken
            // when it signed the request: a slot that sold an item since refuses it (`stale_count`),
            // so a retried, redelivered or replayed count never undoes a sale.
            (&Method::POST, ["inventory"]) => {
                let body = input::object(req.body())?;
                let counts = input::stock_counts(&body)?;
                ok(&views::inventory(
                    &self
                        .inventory
                        .machine_count(id, &counts, envelope.signed_at())
                        .await?,
                ))
            }
            (
                _,
                ["session"]
                | ["purchases"]
                | ["purchases", _, "result"]
                | ["orders"]
                | ["session", "end"]
                | ["inventory"],
            ) => Err(ApiError::new(
                405,
                "method_not_allowed",
                format!("{m} is not allowed on {path}"),
            )),
            _ => Err(ApiError::not_found(format!("no route {path}"))),
        }
    }
}

impl AdminRoutes {
    pub async fn handle(&self, req: &Request<Bytes>) -> Response<Bytes> {
        self.route(req)
            .await
            .unwrap_or_else(ApiError::into_response)
    }

    /// The operator routes, `/admin/...`.
    pub async fn route(&self, req: &Request<Bytes>) -> Result<Response<Bytes>, ApiError> {
        match &self.admin {
            AdminAuth::Token(token) => {
                let given = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                if !auth::admin_token_matches(token, given) {
                    return Err(ApiError::new(
                        401,
                        "unauthorized",
                        "a valid admin bearer token is required",
                    ));
                }
            }
            AdminAuth::Iam => match req.extensions().get::<IamCaller>() {
                Some(caller) => {
                    tracing::info!(caller = %caller.0, path = %req.uri().path(), "admin request")
                }
                None => return Err(ApiError::new(
                    401,
                    "unauthorized",
                    "admin routes need an IAM-signed request (API Gateway AWS_IAM authorization)",
                )),
            },
        }
        let segs = segments(req.uri().path());
        if segs.first() != Some(&"admin") {
            return Err(ApiError::not_found(format!(
                "no route {}",
                req.uri().path()
            )));
        }
        let path = req.uri().path();
        let segs = segments(path);
        let m = req.method();
        match (m, &segs[1..]) {
            (&Method::POST, ["devices"]) => self.register(req.body()).await,
            (&Method::GET, ["devices", id]) => ok(&views::device(&self.known_device(id).await?)),
            (&Method::POST, ["devices", id, "qrcode"]) => self.qrcode(id).await,
            (&Method::GET, ["devices", id, "label.svg"]) => self.label(id).await,
            (&Method::GET, ["sessions", id]) => {
                let unknown =
                    || ApiError::new(404, "unknown_session", format!("unknown session {id:?}"));
                let sid = SessionId::parse(*id).map_err(|_| unknown())?;
                let session = self
                    .ledger
                    .store()
                    .session(&sid)
                    .await
                    .map_err(vendpay_app::AppError::from)?
                    .ok_or_else(unknown)?;
                ok(&views::session_detail(&session))
            }
            (&Method::PUT, ["products", sku]) => self.put_product(sku, req.body()).await,
            (&Method::GET, ["products"]) => ok(&views::products(&self.inventory.products().await?)),
            (&Method::PUT, ["devices", id, "slots"]) => {
                let id = device_id(id)?;
                let body = input::object(req.body())?;
                let spec = input::slot_specs(&body)?;
                ok(&views::inventory(
                    &self.inventory.set_slots(&id, &spec).await?,
                ))
            }
            (&Method::GET, ["devices", id, "inventory"]) => {
                let id = device_id(id)?;
                ok(&views::inventory(&self.inventory.inventory(&id).await?))
            }
            (&Method::POST, ["devices", id, "restock"]) => {
                let id = device_id(id)?;
                let body = input::object(req.body())?;
                let counts = input::stock_counts(&body)?;
                ok(&views::inventory(
                    &self.inventory.restock(&id, &counts).await?,
                ))
            }
            (&Method::GET, ["reports", "sales"]) => {
                reports::route(self.reports.as_ref(), req.uri().query()).await
            }
            (&Method::GET, ["inventory"]) => {
                let below = input::below(req.uri().query(), LOW_SHARE)?;
                ok(&views::restocking_round(
                    &self.inventory.restocking_round(below).await?,
                ))
            }
            (
                _,
                ["devices"]
                | ["devices", _]
                | ["devices", _, "qrcode"]
                | ["devices", _, "label.svg"]
                | ["devices", _, "slots" | "inventory" | "restock"]
                | ["products"]
                | ["products", _]
                | ["inventory"]
                | ["reports", "sales"]
                | ["sessions", _],
            ) => Err(ApiError::new(
                405,
                "method_not_allowed",
                format!("{m} is not allowed on {path}"),
            )),
            _ => Err(ApiError::not_found(format!("no route {path}"))),
        }
    }

    async fn known_device(&self, raw: &str) -> Result<DeviceRecord, ApiError> {
        let id = device_id(raw)?;
        self.devices
            .device(&id)
            .await
            .map_err(vendpay_app::AppError::from)?
            .ok_or_else(|| unknown_device(raw))
    }

    /// `PUT /admin/products/{sku}`: `{"name", "price", "category"?}`, an upsert.
    async fn put_product(&self, raw_sku: &str, body: &[u8]) -> Result<Response<Bytes>, ApiError> {
        let sku = input::sku_in_path(raw_sku)?;
        let body = input::object(body)?;
        let name = input::string(&body, "name")?;
        let price = input::price_in_any_currency(&body, "price")?;
        let category = input::optional_string(&body, "category")?;
        let product = self
            .inventory
            .put_product(sku, name, price, category)
            .await?;
        tracing::info!(sku = %product.sku, "product saved");
        ok(&json!({"product": views::product(&product)}))
    }

    async fn register(&self, body: &[u8]) -> Result<Response<Bytes>, ApiError> {
        let body = input::object(body)?;
        let id = input::parsed::<DeviceId>(&body, "device_id")?;
        let text = |field: &str, max: usize| -> Result<String, ApiError> {
            let s = input::string(&body, field)?.trim();
            if s.is_empty() || s.chars().count() > max {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    format!("{field}: 1 to {max} characters"),
                ));
            }
            Ok(s.to_owned())
        };
        let name = text("name", 64)?;
        if name.contains('&') {
            // The name is the QR code's store name, which Alipay may echo in notifications; a value
            // with `&name=` in a notification is refused as a forgery, so it must never be ours.
            return Err(ApiError::bad_request(
                "invalid_field",
                "name: must not contain '&'",
            ));
        }
        let district = text("district", 64)?;
        let location = match input::optional_string(&body, "location")? {
            Some(l) if l.chars().count() > 128 => {
                return Err(ApiError::bad_request(
                    "invalid_field",
                    "location: at most 128 characters",
                ))
            }
            other => other.map(|l| l.trim().to_owned()),
        };
        let currency = input::parsed::<Currency>(&body, "currency")?;
        let mode = match input::optional_string(&body, "mode")? {
            Some(m) => m
                .parse::<Mode>()
                .map_err(|e| ApiError::bad_request("invalid_field", format!("mode: {e}")))?,
            None => Mode::default(),
        };
        let (credential, secret) = self
            .device_key
            .new_credential(&id)
            .map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
        let record = DeviceRecord {
            device: vendpay_domain::Device {
                id: id.clone(),
                mode,
                currency,
            },
            name,
            district,
            location,
            credential,
            qrcode: None,
            created_at: self.ledger.now(),
            current: None,
            version: 0,
        };
        let created = self
            .devices
            .register(&record)
            .await
            .map_err(vendpay_app::AppError::from)?;
        if !created {
            return Err(ApiError::new(
                409,
                "device_exists",
                format!("device {id} is already registered"),
            ));
        }
        tracing::info!(device = %id, "device registered");
        Ok(json_response(
            StatusCode::CREATED,
            &json!({"device": views::device(&record), "secret": secret}),
        ))
    }

    /// The notify URL Alipay posts a machine's payments to.
    pub fn notify_url(&self, device: &DeviceId) -> String {
        format!(
            "{}/alipay/notify/{}",
            self.public_base_url.trim_end_matches('/'),
            device.as_str()
        )
    }

    async fn qrcode(&self, raw: &str) -> Result<Response<Bytes>, ApiError> {
        let record = self.known_device(raw).await?;
        let qr = match &record.qrcode {
            Some(qr) => qr.clone(),
            None => {
                let notify_url = self.notify_url(&record.device.id);
                let qr = self.qr.create(&record, &notify_url).await.map_err(|e| {
                    if e.retryable {
                        ApiError::new(503, "unavailable", format!("Alipay did not answer: {e}"))
                    } else {
                        ApiError::new(
                            502,
                            "alipay_refused",
                            format!("Alipay refused the QR code: {e}"),
                        )
                    }
                })?;
                self.devices
                    .set_qrcode(&record.device.id, &qr)
                    .await
                    .map_err(vendpay_app::AppError::from)?;
                qr
            }
        };
        ok(&json!({"qrcode": qr.qrcode, "qrcode_img_url": qr.qrcode_img_url}))
    }

    async fn label(&self, raw: &str) -> Result<Response<Bytes>, ApiError> {
        let record = self.known_device(raw).await?;
        let Some(qr) = &record.qrcode else {
            return Err(ApiError::new(
                409,
                "no_qrcode",
                format!("device {raw} has no QR code yet; POST /admin/devices/{raw}/qrcode first"),
            ));
        };
        let svg =
            label::svg(&qr.qrcode, record.device.id.as_str(), &record.name).ok_or_else(|| {
                ApiError::new(500, "internal", "the QR code content cannot be encoded")
            })?;
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "image/svg+xml")
            .body(Bytes::from(svg))
            .map_err(|e| ApiError::new(500, "internal", e.to_string()))
    }
}
