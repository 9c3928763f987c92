//! The HTTP side: configuration from the environment, the one shared reqwest client, and
//! [`HttpGateway`], the [`AlipayGateway`] port implemented over mapi.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use vendpay_domain::{Clock, Currency, DeviceId};

use crate::error::AlipayError;
use crate::keys::KeyError;
use crate::notify::{verify_notification, Notification, NotifyError};
use crate::request::{
    notify_verify_params, qrcode_modify_status_params, NotifyId, Params, PartnerId, QrBizData,
    QrCode, QrCodeCreate, QrCodeModify, QrCodeStatus, RefundRequest, TradeRef,
};
use crate::response::{
    notify_verify_answer, parse_answer, qrcode_info, qrcode_status_answer, refund_answer,
    trade_query, QrCodeInfo, RefundOutcome, TradeQuery,
};
use crate::sign::{SignType, Signer, Verifier};

/// What Alipay's SDK uses (see `docs/alipay.md`, “Transport”).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(15);

/// A setting that is missing or malformed; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlipayConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{setting}: {reason}")]
    Invalid {
        setting: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> AlipayConfigError {
    AlipayConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

/// How to reach and authenticate with the gateway; read once at start-up.
#[derive(Debug)]
pub struct AlipayConfig {
    pub gateway_url: String,
    pub partner: PartnerId,
    pub signer: Signer,
    pub verifier: Verifier,
}

impl AlipayConfig {
    /// Reads `ALIPAY_GATEWAY_URL`, `ALIPAY_PARTNER_ID`, `ALIPAY_SIGN_TYPE` (RSA2 by default),
    /// `ALIPAY_PRIVATE_KEY`, `ALIPAY_PUBLIC_KEY` and `ALIPAY_MD5_KEY` through `get` (the environment, or
    /// resolved secrets).
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<AlipayConfig, AlipayConfigError> {
        let opt = |name: &'static str| get(name).filter(|v| !v.trim().is_empty());
        let req = |name: &'static str| opt(name).ok_or(AlipayConfigError::Missing(name));
        let gateway_url = req("ALIPAY_GATEWAY_URL")?.trim().to_owned();
        check_gateway_url(&gateway_url)?;
        let partner = PartnerId::parse(req("ALIPAY_PARTNER_ID")?.trim())
            .map_err(|e| invalid("ALIPAY_PARTNER_ID", e.reason))?;
        let sign_type = match opt("ALIPAY_SIGN_TYPE") {
            None => SignType::Rsa2,
            Some(s) => s
                .trim()
                .parse()
                .map_err(|_| invalid("ALIPAY_SIGN_TYPE", "must be RSA2, RSA or MD5"))?,
        };
        let signer = match sign_type {
            SignType::Md5 => {
                Signer::from_setting(sign_type, "ALIPAY_MD5_KEY", &req("ALIPAY_MD5_KEY")?)?
            }
            SignType::Rsa | SignType::Rsa2 => {
                Signer::from_setting(sign_type, "ALIPAY_PRIVATE_KEY", &req("ALIPAY_PRIVATE_KEY")?)?
            }
        };
        let mut verifier = Verifier::new();
        let public = if sign_type == SignType::Md5 {
            opt("ALIPAY_PUBLIC_KEY")
        } else {
            Some(req("ALIPAY_PUBLIC_KEY")?)
        };
        if let Some(pk) = public {
            verifier = verifier.with_public_key("ALIPAY_PUBLIC_KEY", &pk)?;
        }
        if let Some(md5) = opt("ALIPAY_MD5_KEY") {
            verifier = verifier.with_md5_key("ALIPAY_MD5_KEY", &md5)?;
        }
        Ok(AlipayConfig {
            gateway_url,
            partner,
            signer,
            verifier,
        })
    }
}

/// Answers are signed, but only their business node: over plain http an on-path party could replay
/// another signed node or drop the echo, so TLS is required except to this very host (the sandbox).
fn check_gateway_url(url: &str) -> Result<(), AlipayConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| invalid("ALIPAY_GATEWAY_URL", format!("not a URL ({e}): {url:?}")))?;
    let host = parsed.host_str().unwrap_or("");
    if host.is_empty() {
        return Err(invalid("ALIPAY_GATEWAY_URL", format!("no host in {url:?}")));
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(host) => Ok(()),
        "http" => Err(invalid(
            "ALIPAY_GATEWAY_URL",
            format!("must be https:// (plain http only to 127.0.0.1, ::1 or localhost): {url:?}"),
        )),
        other => Err(invalid(
            "ALIPAY_GATEWAY_URL",
            format!("must be an https:// URL, not {other}: {url:?}"),
        )),
    }
}

fn is_loopback(host: &str) -> bool {
    let ip = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The merchant fields of `qrcode.create` that are the same for every machine (see
/// `docs/contract.md`, “Configuration”).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerchantProfile {
    pub secondary_merchant_id: String,
    pub secondary_merchant_name: String,
    pub industry: String,
    pub settlement_currency: Currency,
    pub country_code: Option<String>,
}

impl MerchantProfile {
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<MerchantProfile, AlipayConfigError> {
        let opt = |name: &'static str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let req = |name: &'static str| opt(name).ok_or(AlipayConfigError::Missing(name));
        let settlement_currency = req("ALIPAY_SETTLEMENT_CURRENCY")?.parse().map_err(
            |e: vendpay_domain::money::UnknownCurrency| {
                invalid("ALIPAY_SETTLEMENT_CURRENCY", e.to_string())
            },
        )?;
        let profile = MerchantProfile {
            secondary_merchant_id: req("ALIPAY_SECONDARY_MERCHANT_ID")?,
            secondary_merchant_name: req("ALIPAY_SECONDARY_MERCHANT_NAME")?,
            industry: req("ALIPAY_MERCHANT_INDUSTRY")?,
            settlement_currency,
            country_code: opt("ALIPAY_COUNTRY_CODE"),
        };
        // Catch a bad MCC or merchant id at start-up rather than at the first provisioning.
        let probe = profile.biz_data(
            &DeviceId::parse("probe").map_err(|e| invalid("device", e.to_string()))?,
            "probe",
            profile.settlement_currency,
        );
        probe.to_json().map_err(|e| {
            let setting = match e.field {
                "secondary_merchant_id" => "ALIPAY_SECONDARY_MERCHANT_ID",
                "secondary_merchant_name" => "ALIPAY_SECONDARY_MERCHANT_NAME",
                "secondary_merchant_industry" => "ALIPAY_MERCHANT_INDUSTRY",
                _ => "ALIPAY_COUNTRY_CODE",
            };
            invalid(setting, e.reason)
        })?;
        Ok(profile)
    }

    /// `biz_data` for one machine: its id is the `store_id` (one code per machine, idempotent).
    pub fn biz_data(
        &self,
        device: &DeviceId,
        store_name: &str,
        price_currency: Currency,
    ) -> QrBizData {
        QrBizData {
            secondary_merchant_id: self.secondary_merchant_id.clone(),
            secondary_merchant_name: self.secondary_merchant_name.clone(),
            secondary_merchant_industry: self.industry.clone(),
            store_id: device.clone(),
            store_name: store_name.to_owned(),
            trans_currency: price_currency,
            currency: self.settlement_currency,
            country_code: self.country_code.clone(),
            address: None,
            passback_parameters: Some(
                [("device_id".to_owned(), device.as_str().to_owned())]
                    .into_iter()
                    .collect(),
            ),
        }
    }
}

/// The one HTTP client: rustls on aws-lc-rs (as the AWS SDK), connect 3 s, total 15 s. Build it once
/// and hand it to every [`HttpGateway`].
pub fn http_client() -> Result<reqwest::Client, AlipayError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TOTAL_TIMEOUT)
        // The gateway answers itself; a redirect could lead an https gateway to plain http or
        // another host (and turn the signed POST into a GET).
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| AlipayError::Transport(e.to_string()))
}

/// What vendpay asks of Alipay. Implemented over HTTP by [`HttpGateway`]; tests may fake it.
pub trait AlipayGateway: Send + Sync {
    fn qrcode_create(
        &self,
        req: &QrCodeCreate,
    ) -> impl Future<Output = Result<QrCodeInfo, AlipayError>> + Send;

    fn qrcode_modify_status(
        &self,
        qrcode: &QrCode,
        status: QrCodeStatus,
    ) -> impl Future<Output = Result<(), AlipayError>> + Send;

    /// `spot.refund` with `is_sync=Y`. A retry must reuse the same `partner_refund_id` and amount.
    fn refund(
        &self,
        req: &RefundRequest,
    ) -> impl Future<Output = Result<RefundOutcome, AlipayError>> + Send;

    fn query(
        &self,
        trade: &TradeRef,
    ) -> impl Future<Output = Result<TradeQuery, AlipayError>> + Send;

    fn notify_verify(
        &self,
        notify_id: &NotifyId,
    ) -> impl Future<Output = Result<bool, AlipayError>> + Send;
}

/// [`AlipayGateway`] over the mapi HTTP gateway.
#[derive(Clone)]
pub struct HttpGateway {
    http: reqwest::Client,
    config: Arc<AlipayConfig>,
    clock: Arc<dyn Clock>,
}

impl HttpGateway {
    pub fn new(
        http: reqwest::Client,
        config: Arc<AlipayConfig>,
        clock: Arc<dyn Clock>,
    ) -> HttpGateway {
        HttpGateway {
            http,
            config,
            clock,
        }
    }

    pub fn config(&self) -> &AlipayConfig {
        &self.config
    }

    /// Parses and verifies a notification body with the configured Alipay keys.
    pub fn verify_notification(&self, body: &[u8]) -> Result<Notification, NotifyError> {
        verify_notification(body, &self.config.verifier)
    }

    pub async fn qrcode_modify(&self, req: &QrCodeModify) -> Result<QrCodeInfo, AlipayError> {
        let params = req.params(&self.config.partner, self.clock.now())?;
        let body = self.post(params).await?;
        qrcode_info(parse_answer(&body, &self.config.verifier)?)
    }

    fn url_with(&self, query: &str) -> String {
        let sep = if self.config.gateway_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}{query}", self.config.gateway_url)
    }

    async fn post(&self, params: Params) -> Result<Vec<u8>, AlipayError> {
        let params = params
            .sign(&self.config.signer)
            .map_err(|e| AlipayError::Request(e.to_string()))?;
        let req = self
            .http
            .post(self.url_with("_input_charset=UTF-8"))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=UTF-8",
            )
            .body(params.form_body());
        self.exchange(req).await
    }

    async fn exchange(&self, req: reqwest::RequestBuilder) -> Result<Vec<u8>, AlipayError> {
        let resp = req
            .send()
            .await
            .map_err(|e| AlipayError::from_reqwest(&e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(AlipayError::HttpStatus(status.as_u16()));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| AlipayError::from_reqwest(&e))?;
        Ok(body.to_vec())
    }
}

impl AlipayGateway for HttpGateway {
    async fn qrcode_create(&self, req: &QrCodeCreate) -> Result<QrCodeInfo, AlipayError> {
        let params = req.params(&self.config.partner, self.clock.now())?;
        let body = self.post(params).await?;
        qrcode_info(parse_answer(&body, &self.config.verifier)?)
    }

    async fn qrcode_modify_status(
        &self,
        qrcode: &QrCode,
        status: QrCodeStatus,
    ) -> Result<(), AlipayError> {
        let params =
            qrcode_modify_status_params(&self.config.partner, qrcode, status, self.clock.now());
        let body = self.post(params).await?;
        qrcode_status_answer(parse_answer(&body, &self.config.verifier)?)
    }

    async fn refund(&self, req: &RefundRequest) -> Result<RefundOutcome, AlipayError> {
        let params = req.params(&self.config.partner)?;
        let body = self.post(params).await?;
        refund_answer(
            &body,
            &self.config.verifier,
            &req.partner_refund_id,
            req.amount,
        )
    }

    async fn query(&self, trade: &TradeRef) -> Result<TradeQuery, AlipayError> {
        let body = self.post(trade.params(&self.config.partner)).await?;
        trade_query(parse_answer(&body, &self.config.verifier)?, trade)
    }

    async fn notify_verify(&self, notify_id: &NotifyId) -> Result<bool, AlipayError> {
        let params = notify_verify_params(&self.config.partner, notify_id);
        let body = self
            .exchange(self.http.get(self.url_with(&params.query_string())))
            .await?;
        notify_verify_answer(&body)
    }
}
