//! `GET /admin/reports/sales?from=&to=&format=json|html` (see `docs/sales.md`): the sales report over
//! the facts of the embedded store. On AWS the facts live in S3 and the report is the Athena
//! workgroup's named queries, so the route there answers 501 saying so.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use vendpay_app::{FactStore, StoreError};
use vendpay_insight::{build, Period, SalesReport};

use crate::error::ApiError;

/// Where the report route reads facts, and the offset its days are in (`REPORT_TZ`).
#[derive(Clone)]
pub struct Reports {
    pub facts: Arc<dyn FactStore>,
    pub tz: String,
    /// One report at a time: a year's report holds its facts in memory (about 1 GB for a million
    /// sales), and the process serving it also takes payments.
    pub one_at_a_time: Arc<tokio::sync::Semaphore>,
}

impl Reports {
    pub fn new(facts: Arc<dyn FactStore>, tz: impl Into<String>) -> Reports {
        Reports {
            facts,
            tz: tz.into(),
            one_at_a_time: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// The report over `period`: its facts and the previous period's, and the buyers seen before it.
pub async fn sales(facts: &dyn FactStore, period: &Period) -> Result<SalesReport, StoreError> {
    let (rows, history) = tokio::join!(
        facts.facts(period.previous_start(), period.end()),
        facts.buyers_before(period.start())
    );
    let (rows, history, period) = (rows?, history?, *period);
    // Building takes seconds on a big store: off the async workers, which serve the money routes.
    tokio::task::spawn_blocking(move || build(&period, &rows, &history))
        .await
        .map_err(|e| StoreError::Unavailable(format!("building the report: {e}").into()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Html,
}

/// `from`, `to` and `format` of the query string, each at most once.
fn query(q: Option<&str>) -> Result<(String, String, Format), ApiError> {
    let (mut from, mut to, mut format) = (None, None, None);
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "from" => &mut from,
            "to" => &mut to,
            "format" => &mut format,
            other => {
                return Err(ApiError::bad_request(
                    "bad_period",
                    format!("unknown parameter {other:?}: expected from, to and format"),
                ))
            }
        };
        if slot.replace(value.to_owned()).is_some() {
            return Err(ApiError::bad_request(
                "bad_period",
                format!("{name}: given more than once"),
            ));
        }
    }
    let need = |v: Option<String>, name: &str| {
        v.ok_or_else(|| {
            ApiError::bad_request("bad_period", format!("{name} is required (YYYY-MM-DD)"))
        })
    };
    let format = match format.as_deref() {
        None | Some("json") => Format::Json,
        Some("html") => Format::Html,
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_format",
                format!("format {other:?}: expected json or html"),
            ))
        }
    };
    Ok((need(from, "from")?, need(to, "to")?, format))
}

/// Answers the route; `reports` is `None` where no store of facts is at hand (AWS).
pub async fn route(
    reports: Option<&Reports>,
    q: Option<&str>,
) -> Result<Response<Bytes>, ApiError> {
    let (from, to, format) = query(q)?;
    let Some(reports) = reports else {
        return Err(ApiError::new(
            501,
            "reports_on_athena",
            "on AWS the sales report is the Athena workgroup's named queries over the facts in S3 (see docs/sales.md)",
        ));
    };
    let period = Period::parse(&from, &to, &reports.tz)
        .map_err(|e| ApiError::bad_request("bad_period", e.to_string()))?;
    let _turn = reports
        .one_at_a_time
        .acquire()
        .await
        .map_err(|e| ApiError::new(503, "unavailable", e.to_string()))?;
    let report = sales(reports.facts.as_ref(), &period)
        .await
        .map_err(vendpay_app::AppError::from)?;
    let (body, content_type) = match format {
        Format::Json => (
            serde_json::to_vec(&report)
                .map_err(|e| ApiError::new(500, "internal", e.to_string()))?,
            "application/json",
        ),
        Format::Html => (report.to_html().into_bytes(), "text/html; charset=utf-8"),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Bytes::from(body))
        .map_err(|e| ApiError::new(500, "internal", e.to_string()))
}
