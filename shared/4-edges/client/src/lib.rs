//! The test kit client: vendpay's HTTP contract (`docs/contract.md`) seen from the caller's side, over
//! reqwest, answers as JSON.
//!
//! It holds the operator's calls with the admin token (register a machine and create its QR code, read
//! a session, the catalogue and inventory routes), a machine's calls signed with [`vendpay_api::auth::signed_headers`] (the one signing
//! implementation), the sandbox's customer side (`POST /sandbox/pay`, faults, delivery and refund
//! logs), and [`wait_for`] / [`poll_until`], polls with a deadline. [`Client::call`] sends anything
//! else as it is given, for tests of malformed requests.
//!
//! Used by `vendpay demo`, `vendpay load`, the end-to-end harness (`tests/src/lib.rs`) and the tests of
//! the `vendpay` binary (`shared/5-binaries/vendpay/tests/serve.rs`). A wrong answer is a
//! [`ClientError`], never a panic: callers that are tests turn it into one.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// How long [`wait_for`] sleeps between two probes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Why a call did not give the answer it should have.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    #[error("method {method}: {reason}")]
    Method { method: String, reason: String },
    #[error("{path}: {source}")]
    Http {
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{request} answered {status}: {body}")]
    Status {
        request: String,
        status: u16,
        body: Value,
    },
    #[error("no {field} in the answer to {request}")]
    Missing {
        request: String,
        field: &'static str,
    },
    #[error(
        "timed out after {after:?} waiting for {what}{}",
        last.as_ref().map(|l| format!("; last seen {l}")).unwrap_or_default()
    )]
    Timeout {
        what: String,
        after: Duration,
        last: Option<String>,
    },
}

/// An HTTP answer: its status and body (JSON when it parses, else the text as a JSON string).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// `METHOD path`, for errors.
    request: String,
}

impl Answer {
    /// The body of a 2xx answer.
    pub fn success(self) -> Result<Value, ClientError> {
        if (200..300).contains(&self.status) {
            Ok(self.body)
        } else {
            Err(self.refused())
        }
    }

    /// The body of an answer with exactly this status.
    pub fn require(self, status: u16) -> Result<Value, ClientError> {
        if self.status == status {
            Ok(self.body)
        } else {
            Err(self.refused())
        }
    }

    fn refused(self) -> ClientError {
        ClientError::Status {
            request: self.request,
            status: self.status,
            body: self.body,
        }
    }
}

/// A text field of an answer to `request`.
fn text_field(body: &Value, field: &'static str, request: &str) -> Result<String, ClientError> {
    body.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ClientError::Missing {
            request: request.to_owned(),
            field,
        })
}

/// What the caller keeps of a registered machine: its id, the secret it signs with, and its Alipay QR
/// code (the port's `vendpay_app::Machine` is the stored machine and its session, another idea).
#[derive(Clone)]
pub struct MachineKeys {
    pub id: String,
    pub secret: String,
    pub qrcode: String,
}

/// The body of `POST /admin/devices`.
#[derive(Debug, Clone, Copy)]
pub struct NewDevice<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub district: &'a str,
    pub location: Option<&'a str>,
    pub currency: &'a str,
    /// `pay_first`, `purchase_first` or `mixed`.
    pub mode: &'a str,
}

impl NewDevice<'_> {
    fn to_json(self) -> Value {
        let mut body = json!({"device_id": self.id, "name": self.name, "district": self.district,
            "currency": self.currency, "mode": self.mode});
        if let (Some(location), Some(map)) = (self.location, body.as_object_mut()) {
            map.insert("location".to_owned(), json!(location));
        }
        body
    }
}

/// One slot of a planogram (`PUT /admin/devices/{id}/slots`); `price: None` sells at the product's.
#[derive(Debug, Clone)]
pub struct SlotPlan<'a> {
    pub slot: &'a str,
    pub sku: &'a str,
    pub capacity: u32,
    pub price: Option<Value>,
}

impl SlotPlan<'_> {
    fn to_json(&self) -> Value {
        let mut body = json!({"slot": self.slot, "sku": self.sku, "capacity": self.capacity});
        if let (Some(price), Some(map)) = (&self.price, body.as_object_mut()) {
            map.insert("price".to_owned(), price.clone());
        }
        body
    }
}

/// `{"slots": [{"slot", "stock"}]}`: a slot's count after a refill (or as the machine counted it), the
/// body of a restock and of a machine's inventory report.
pub fn stock_counts(counts: &[(&str, u32)]) -> Value {
    let slots: Vec<Value> = counts
        .iter()
        .map(|(slot, stock)| json!({"slot": slot, "stock": stock}))
        .collect();
    json!({ "slots": slots })
}

/// The body of a purchase (`request_id`) or an order (`order_id`): `price` only when given (a slot of
/// the planogram may omit it).
fn sale_body(id_field: &str, id: &str, slot: &str, price: Option<&Value>) -> Value {
    let mut body = json!({ id_field: id, "slot": slot });
    if let (Some(price), Some(map)) = (price, body.as_object_mut()) {
        map.insert("price".to_owned(), price.clone());
    }
    body
}

/// Money as the contract writes it: `{"minor", "currency"}`.
pub fn money(minor: u64, currency: &str) -> Value {
    json!({"minor": minor, "currency": currency})
}

/// `minor` fen (CNY minor units) as JSON money.
pub fn cny(minor: u64) -> Value {
    money(minor, "CNY")
}

/// The Unix time in seconds (0 for a clock before 1970).
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A client of one vendpay server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    admin_token: String,
}

impl Client {
    /// A client of the server at `base` (`http://host:port`, no trailing slash) that presents
    /// `admin_token` on operator routes.
    pub fn new(base: &str, admin_token: &str) -> Result<Client, ClientError> {
        Client::from_builder(reqwest::Client::builder(), base, admin_token)
    }

    /// As [`Client::new`], with the HTTP client's settings (timeouts, pool) given.
    pub fn from_builder(
        builder: reqwest::ClientBuilder,
        base: &str,
        admin_token: &str,
    ) -> Result<Client, ClientError> {
        Ok(Client {
            http: builder.build().map_err(ClientError::Build)?,
            base: base.trim_end_matches('/').to_owned(),
            admin_token: admin_token.to_owned(),
        })
    }

    /// The server's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The underlying HTTP client (shares its connection pool).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// One request, sent as given; any status is an answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: String,
    ) -> Result<Answer, ClientError> {
        let verb =
            reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| ClientError::Method {
                method: method.to_owned(),
                reason: e.to_string(),
            })?;
        let mut req = self.http.request(verb, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let http_error = |source| ClientError::Http {
            path: path.to_owned(),
            source,
        };
        let res = req.body(body).send().await.map_err(http_error)?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(http_error)?;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok(Answer {
            status,
            body,
            request: format!("{method} {path}"),
        })
    }

    /// A request with an optional JSON body (and its content type).
    async fn json(
        &self,
        method: &str,
        path: &str,
        mut headers: Vec<(&str, String)>,
        body: Option<&Value>,
    ) -> Result<Answer, ClientError> {
        let body = match body {
            Some(b) => {
                headers.push(("content-type", "application/json".to_owned()));
                b.to_string()
            }
            None => String::new(),
        };
        self.call(method, path, &headers, body).await
    }

    // --- operator ---

    /// An operator's request with the admin token; any status is an answer.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ClientError> {
        let auth = vec![("authorization", format!("Bearer {}", self.admin_token))];
        self.json(method, path, auth, body).await
    }

    /// Registers a machine (`201`) and creates its QR code (`200`).
    pub async fn register(&self, device: &NewDevice<'_>) -> Result<MachineKeys, ClientError> {
        let created = self
            .admin("POST", "/admin/devices", Some(&device.to_json()))
            .await?
            .require(201)?;
        let secret = text_field(&created, "secret", "POST /admin/devices")?;
        let qr = self.qrcode(device.id).await?;
        Ok(MachineKeys {
            id: device.id.to_owned(),
            secret,
            qrcode: text_field(&qr, "qrcode", "POST /admin/devices/{id}/qrcode")?,
        })
    }

    /// `POST /admin/devices/{id}/qrcode` (`200`): `{qrcode, qrcode_img_url}`.
    pub async fn qrcode(&self, device_id: &str) -> Result<Value, ClientError> {
        self.admin("POST", &format!("/admin/devices/{device_id}/qrcode"), None)
            .await?
            .require(200)
    }

    /// The operator's view of a session (`200`).
    pub async fn admin_session(&self, session_id: &str) -> Result<Value, ClientError> {
        self.admin("GET", &format!("/admin/sessions/{session_id}"), None)
            .await?
            .require(200)
    }

    /// As [`Client::admin_session`], but `None` while the session does not exist (`404`).
    pub async fn find_session(&self, session_id: &str) -> Result<Option<Value>, ClientError> {
        let a = self
            .admin("GET", &format!("/admin/sessions/{session_id}"), None)
            .await?;
        match a.status {
            404 => Ok(None),
            _ => a.require(200).map(Some),
        }
    }

    // --- catalogue and inventory (operator) ---

    /// `PUT /admin/products/{sku}` (2xx): `{"product": {...}}`.
    pub async fn put_product(
        &self,
        sku: &str,
        name: &str,
        price: &Value,
        category: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut body = json!({"name": name, "price": price});
        if let (Some(category), Some(map)) = (category, body.as_object_mut()) {
            map.insert("category".to_owned(), json!(category));
        }
        self.admin("PUT", &format!("/admin/products/{sku}"), Some(&body))
            .await?
            .success()
    }

    /// `GET /admin/products` (2xx): `{"products": [...]}` ordered by sku.
    pub async fn products(&self) -> Result<Value, ClientError> {
        self.admin("GET", "/admin/products", None).await?.success()
    }

    /// `PUT /admin/devices/{id}/slots` (2xx): replaces the machine's slot map; the inventory.
    pub async fn set_slots(
        &self,
        device_id: &str,
        slots: &[SlotPlan<'_>],
    ) -> Result<Value, ClientError> {
        let slots: Vec<Value> = slots.iter().map(SlotPlan::to_json).collect();
        let body = json!({ "slots": slots });
        self.admin(
            "PUT",
            &format!("/admin/devices/{device_id}/slots"),
            Some(&body),
        )
        .await?
        .success()
    }

    /// `GET /admin/devices/{id}/inventory` (2xx): `{"device_id", "slots": [...]}`.
    pub async fn inventory(&self, device_id: &str) -> Result<Value, ClientError> {
        self.admin(
            "GET",
            &format!("/admin/devices/{device_id}/inventory"),
            None,
        )
        .await?
        .success()
    }

    /// `POST /admin/devices/{id}/restock` (2xx) with each slot's count after the refill; the inventory.
    pub async fn restock(
        &self,
        device_id: &str,
        counts: &[(&str, u32)],
    ) -> Result<Value, ClientError> {
        let body = stock_counts(counts);
        self.admin(
            "POST",
            &format!("/admin/devices/{device_id}/restock"),
            Some(&body),
        )
        .await?
        .success()
    }

    /// `GET /admin/inventory[?below=]` (2xx): the restocking round, `{"districts": [...]}`; `None`
    /// leaves the threshold to the server (a quarter of capacity).
    pub async fn restocking_round(&self, below: Option<f64>) -> Result<Value, ClientError> {
        let path = match below {
            Some(b) => format!("/admin/inventory?below={b}"),
            None => "/admin/inventory".to_owned(),
        };
        self.admin("GET", &path, None).await?.success()
    }

    // --- machine ---

    /// A machine's request signed now with its secret; any status is an answer.
    pub async fn device(
        &self,
        m: &MachineKeys,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ClientError> {
        let text = body.map(Value::to_string).unwrap_or_default();
        let signed = vendpay_api::auth::signed_headers(
            &m.id,
            &m.secret,
            method,
            path,
            text.as_bytes(),
            now_secs(),
        );
        self.json(method, path, signed.to_vec(), body).await
    }

    /// `GET /devices/{id}/session`: what the machine should show (2xx).
    pub async fn session(&self, m: &MachineKeys) -> Result<Value, ClientError> {
        self.device(m, "GET", &format!("/devices/{}/session", m.id), None)
            .await?
            .success()
    }

    /// A machine's signed `POST /devices/{id}/{tail}` whose answer must be 2xx.
    async fn device_post(
        &self,
        m: &MachineKeys,
        tail: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let path = format!("/devices/{}/{tail}", m.id);
        self.device(m, "POST", &path, body).await?.success()
    }

    /// `POST /devices/{id}/purchases` (2xx): the decision. `price: None` leaves it out, for a slot of
    /// the planogram (the server's price).
    pub async fn purchase(
        &self,
        m: &MachineKeys,
        request_id: &str,
        slot: &str,
        price: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let body = sale_body("request_id", request_id, slot, price);
        self.device_post(m, "purchases", Some(&body)).await
    }

    /// `POST /devices/{id}/purchases/{request_id}/result` (2xx): the session view.
    pub async fn vend(
        &self,
        m: &MachineKeys,
        request_id: &str,
        delivered: bool,
    ) -> Result<Value, ClientError> {
        let body = json!({ "delivered": delivered });
        let tail = format!("purchases/{request_id}/result");
        self.device_post(m, &tail, Some(&body)).await
    }

    /// `POST /devices/{id}/orders` (2xx): the order's view. `price: None` leaves it out, for a slot of
    /// the planogram. A sold-out slot is a `409 sold_out` ([`ClientError::Status`]).
    pub async fn order(
        &self,
        m: &MachineKeys,
        order_id: &str,
        slot: &str,
        price: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let body = sale_body("order_id", order_id, slot, price);
        self.device_post(m, "orders", Some(&body)).await
    }

    /// `POST /devices/{id}/inventory` (2xx), signed by the machine: the counts it took (as a restock);
    /// the inventory.
    pub async fn report_inventory(
        &self,
        m: &MachineKeys,
        counts: &[(&str, u32)],
    ) -> Result<Value, ClientError> {
        let body = stock_counts(counts);
        self.device_post(m, "inventory", Some(&body)).await
    }

    /// `POST /devices/{id}/session/end` (2xx), naming the session when `session_id` is given; the
    /// session's view.
    pub async fn end_session(
        &self,
        m: &MachineKeys,
        session_id: Option<&str>,
    ) -> Result<Value, ClientError> {
        let body = session_id.map(|s| json!({ "session_id": s }));
        self.device_post(m, "session/end", body.as_ref()).await
    }

    // --- sandbox (customer side) ---

    /// A customer pays `amount` to the machine's QR code through `POST /sandbox/pay` (`200`): the
    /// receipt (`trade_no`, ...). The sandbox then POSTs the signed notification.
    pub async fn pay(&self, device_id: &str, amount: &Value) -> Result<Value, ClientError> {
        let body = json!({"device_id": device_id, "amount": amount});
        self.json("POST", "/sandbox/pay", Vec::new(), Some(&body))
            .await?
            .require(200)
    }

    /// `POST /sandbox/faults` (`204`).
    pub async fn faults(&self, faults: &Value) -> Result<(), ClientError> {
        self.json("POST", "/sandbox/faults", Vec::new(), Some(faults))
            .await?
            .require(204)
            .map(drop)
    }

    /// `GET /sandbox/{what}` (`deliveries` or `refunds`, `200`): the log.
    pub async fn sandbox_list(&self, what: &str) -> Result<Vec<Value>, ClientError> {
        let path = format!("/sandbox/{what}");
        match self
            .json("GET", &path, Vec::new(), None)
            .await?
            .require(200)?
        {
            Value::Array(items) => Ok(items),
            _ => Err(ClientError::Missing {
                request: format!("GET {path}"),
                field: "list",
            }),
        }
    }
}

/// Calls `probe` every [`POLL_INTERVAL`] until it answers `Some`; [`ClientError::Timeout`] once
/// `limit` has passed, and the probe's own error at once.
pub async fn wait_for<T>(
    what: &str,
    limit: Duration,
    probe: impl AsyncFnMut() -> Result<Option<T>, ClientError>,
) -> Result<T, ClientError> {
    wait_every(what, limit, POLL_INTERVAL, probe).await
}

async fn wait_every<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> Result<Option<T>, ClientError>,
) -> Result<T, ClientError> {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if Instant::now() >= until {
            return Err(ClientError::Timeout {
                what: what.to_owned(),
                after: limit,
                last: None,
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// Fetches every `every` until `done` holds of what was fetched, within `limit`; a timeout names the
/// last value seen.
pub async fn poll_until(
    what: &str,
    limit: Duration,
    every: Duration,
    mut fetch: impl AsyncFnMut() -> Result<Value, ClientError>,
    done: impl Fn(&Value) -> bool,
) -> Result<Value, ClientError> {
    let mut last = None;
    let found = wait_every(what, limit, every, async || {
        let v = fetch().await?;
        if done(&v) {
            return Ok(Some(v));
        }
        last = Some(v.to_string());
        Ok(None)
    })
    .await;
    match found {
        Err(ClientError::Timeout { what, after, .. }) => {
            Err(ClientError::Timeout { what, after, last })
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_bodies_carry_the_location_only_when_given() {
        let mut d = NewDevice {
            id: "vm-1",
            name: "Lobby",
            district: "Xuhui",
            location: None,
            currency: "CNY",
            mode: "mixed",
        };
        assert_eq!(
            d.to_json(),
            json!({"device_id": "vm-1", "name": "Lobby", "district": "Xuhui", "currency": "CNY", "mode": "mixed"})
        );
        d.location = Some("Hall");
        assert_eq!(d.to_json()["location"], "Hall");
    }

    #[test]
    fn catalogue_bodies_leave_out_what_is_not_given() {
        let plan = SlotPlan {
            slot: "A1",
            sku: "cola",
            capacity: 8,
            price: None,
        };
        assert_eq!(
            plan.to_json(),
            json!({"slot": "A1", "sku": "cola", "capacity": 8})
        );
        let priced = SlotPlan {
            price: Some(cny(300)),
            ..plan
        };
        assert_eq!(priced.to_json()["price"], cny(300));
        assert_eq!(
            stock_counts(&[("A1", 8), ("A2", 0)]),
            json!({"slots": [{"slot": "A1", "stock": 8}, {"slot": "A2", "stock": 0}]})
        );
        assert_eq!(
            sale_body("request_id", "p-1", "A1", None),
            json!({"request_id": "p-1", "slot": "A1"})
        );
        assert_eq!(
            sale_body("order_id", "o-1", "A1", Some(&cny(350))),
            json!({"order_id": "o-1", "slot": "A1", "price": cny(350)})
        );
    }

    #[test]
    fn answers_check_their_status() {
        let a = Answer {
            status: 201,
            body: json!({"secret": "s"}),
            request: "POST /admin/devices".into(),
        };
        assert_eq!(text_field(&a.body, "secret", "r").unwrap(), "s");
        assert!(text_field(&a.body, "qrcode", "r").is_err());
        assert!(a.clone().success().is_ok());
        assert!(a.clone().require(201).is_ok());
        let e = a.require(200).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"POST /admin/devices answered 201: {"secret":"s"}"#
        );
    }

    #[tokio::test]
    async fn polls_end_at_their_deadline_naming_the_last_value() {
        let mut n = 0;
        let v = poll_until(
            "three",
            Duration::from_secs(5),
            Duration::from_millis(1),
            async || {
                n += 1;
                Ok(json!(n))
            },
            |v| v == 3,
        )
        .await
        .unwrap();
        assert_eq!(v, 3);
        let e = poll_until(
            "never",
            Duration::from_millis(120),
            POLL_INTERVAL,
            async || Ok(json!("x")),
            |_| false,
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"timed out after 120ms waiting for never; last seen "x""#
        );
        let e = wait_for::<()>("nothing", Duration::ZERO, async || Ok(None))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "timed out after 0ns waiting for nothing");
    }
}
