//! `vendpay report --from YYYY-MM-DD --to YYYY-MM-DD [--format text|json|html] [--out FILE]
//! [--campaign FILE.csv] [--db FILE]`: the sales report (see `docs/sales.md`) over the facts of a
//! SQLite store, the same report `GET /admin/reports/sales` serves.
//!
//! Exit codes: 0 written; 2 the command line or the period is wrong (nothing read); 1 the store could
//! not be read or a file not written.

use std::path::PathBuf;
use std::time::Instant;

use vendpay_app::FactStore;
use vendpay_insight::Period;
use vendpay_store_sqlite::SqliteStore;

use crate::config::DEFAULT_REPORT_TZ;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Html,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub from: String,
    pub to: String,
    pub format: Format,
    pub out: Option<PathBuf>,
    pub campaign: Option<PathBuf>,
    /// `None`: `VENDPAY_DB`, else `vendpay.sqlite`.
    pub db: Option<PathBuf>,
}

/// Why a report was not written; [`ReportError::exit_code`] tells the shell.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Period(#[from] vendpay_insight::PeriodError),
    #[error("REPORT_TZ: {0}")]
    Tz(String),
    #[error("no database at {0} (give --db FILE or VENDPAY_DB)")]
    NoDatabase(String),
    #[error("reading {path}: {reason}")]
    Store { path: String, reason: String },
    #[error("writing {path}: {reason}")]
    Write { path: String, reason: String },
}

impl ReportError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ReportError::Usage(_) | ReportError::Period(_) | ReportError::Tz(_) => 2,
            _ => 1,
        }
    }
}

pub const USAGE: &str = "vendpay report --from YYYY-MM-DD --to YYYY-MM-DD [--format text|json|html] [--out FILE] [--campaign FILE.csv] [--db FILE]";

impl Options {
    pub fn parse(flags: &[&str]) -> Result<Options, ReportError> {
        let (mut from, mut to, mut format, mut out, mut campaign, mut db) =
            (None, None, Format::Text, None, None, None);
        let mut i = 0;
        while i < flags.len() {
            let (name, inline) = match flags[i].split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (flags[i], None),
            };
            let value = match inline {
                Some(v) => v.to_owned(),
                None => {
                    i += 1;
                    flags.get(i).map(|v| (*v).to_owned()).ok_or_else(|| {
                        ReportError::Usage(format!("{name} needs a value\n{USAGE}"))
                    })?
                }
            };
            match name {
                "--from" => from = Some(value),
                "--to" => to = Some(value),
                "--format" => {
                    format = match value.as_str() {
                        "text" => Format::Text,
                        "json" => Format::Json,
                        "html" => Format::Html,
                        other => {
                            return Err(ReportError::Usage(format!(
                                "--format {other:?}: expected text, json or html"
                            )))
                        }
                    }
                }
                "--out" => out = Some(PathBuf::from(value)),
                "--campaign" => campaign = Some(PathBuf::from(value)),
                "--db" => db = Some(PathBuf::from(value)),
                other => {
                    return Err(ReportError::Usage(format!(
                        "unknown option {other:?}\n{USAGE}"
                    )))
                }
            }
            i += 1;
        }
        let need = |v: Option<String>, n: &str| {
            v.ok_or_else(|| ReportError::Usage(format!("{n} YYYY-MM-DD is required\n{USAGE}")))
        };
        Ok(Options {
            from: need(from, "--from")?,
            to: need(to, "--to")?,
            format,
            out,
            campaign,
            db,
        })
    }
}

/// Reads the facts and writes the report (to `--out`, else stdout) and the campaign CSV.
pub async fn run(options: &Options) -> Result<(), ReportError> {
    let tz = std::env::var("REPORT_TZ")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_REPORT_TZ.to_owned());
    vendpay_insight::parse_offset(&tz).map_err(|e| ReportError::Tz(e.to_string()))?;
    let period = Period::parse(&options.from, &options.to, &tz)?;
    let db = options.db.clone().unwrap_or_else(|| {
        PathBuf::from(
            std::env::var("VENDPAY_DB")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| crate::config::DEFAULT_DB.to_owned()),
        )
    });
    let path = db.display().to_string();
    if !db.is_file() {
        return Err(ReportError::NoDatabase(path));
    }
    let started = Instant::now();
    eprintln!(
        "vendpay report: {} to {} ({} days, {tz}) from {path} ...",
        period.from_date(),
        period.to_date(),
        period.days()
    );
    let store = SqliteStore::open(&db)
        .await
        .map_err(|e| ReportError::Store {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let read_started = Instant::now();
    let (facts, history) = tokio::join!(
        store.facts(period.previous_start(), period.end()),
        store.buyers_before(period.start())
    );
    let store_err = |e: vendpay_app::StoreError| ReportError::Store {
        path: path.clone(),
        reason: e.to_string(),
    };
    let (facts, history) = (facts.map_err(store_err)?, history.map_err(store_err)?);
    eprintln!(
        "vendpay report: read {} facts and {} earlier buyers in {:.2} s",
        facts.len(),
        history.len(),
        read_started.elapsed().as_secs_f64()
    );
    let built_started = Instant::now();
    let report = vendpay_insight::build(&period, &facts, &history);
    drop(facts);
    eprintln!(
        "vendpay report: built in {:.2} s",
        built_started.elapsed().as_secs_f64()
    );
    let body = match options.format {
        Format::Text => report.to_text(),
        Format::Json => serde_json::to_string_pretty(&report).map_err(|e| ReportError::Write {
            path: "the JSON report".into(),
            reason: e.to_string(),
        })?,
        Format::Html => report.to_html(),
    };
    match &options.out {
        Some(file) => write(file, &body)?,
        None => println!("{body}"),
    }
    if let Some(file) = &options.campaign {
        write(file, &report.campaign_csv())?;
    }
    eprintln!(
        "vendpay report: done in {:.2} s{}{}",
        started.elapsed().as_secs_f64(),
        options
            .out
            .as_ref()
            .map(|f| format!(", report in {}", f.display()))
            .unwrap_or_default(),
        options
            .campaign
            .as_ref()
            .map(|f| format!(", campaign in {}", f.display()))
            .unwrap_or_default()
    );
    Ok(())
}

fn write(file: &std::path::Path, body: &str) -> Result<(), ReportError> {
    std::fs::write(file, body).map_err(|e| ReportError::Write {
        path: file.display().to_string(),
        reason: e.to_string(),
    })
}
