//! The settings each function reads, in named groups: a function lists the groups it needs, the SAM
//! template sets exactly their union (`infra/function-env.json`, checked by `infra/tests`), and
//! [`crate::env`] reads and resolves them once at start-up.

/// The ledger's settings: the table, the three windows, and the key of the facts' buyer keys.
pub const LEDGER_SETTINGS: &[&str] = &[
    "TABLE_NAME",
    "ANALYTICS_KEY",
    "PAY_FIRST_WINDOW_SECS",
    "PURCHASE_FIRST_WINDOW_SECS",
    "ORDER_PAYMENT_WINDOW_SECS",
];
/// Where deadlines go: the queue, and for deadlines beyond 15 minutes the Scheduler's target and role.
pub const DEADLINE_SETTINGS: &[&str] = &[
    "DEADLINE_QUEUE_URL",
    "DEADLINE_QUEUE_ARN",
    "SCHEDULER_ROLE_ARN",
    "SCHEDULE_GROUP_NAME",
];
/// The Alipay gateway and its keys.
pub const ALIPAY_SETTINGS: &[&str] = &[
    "ALIPAY_GATEWAY_URL",
    "ALIPAY_PARTNER_ID",
    "ALIPAY_SIGN_TYPE",
    "ALIPAY_PRIVATE_KEY",
    "ALIPAY_PUBLIC_KEY",
    "ALIPAY_MD5_KEY",
];
/// The merchant fields of `qrcode.create`.
pub const MERCHANT_SETTINGS: &[&str] = &[
    "ALIPAY_SECONDARY_MERCHANT_ID",
    "ALIPAY_SECONDARY_MERCHANT_NAME",
    "ALIPAY_MERCHANT_INDUSTRY",
    "ALIPAY_SETTLEMENT_CURRENCY",
    "ALIPAY_COUNTRY_CODE",
];

/// Admin auth and notify URLs (qr-provision).
pub const ADMIN_SETTINGS: &[&str] = &["DEVICE_KEY", "ADMIN_TOKEN", "PUBLIC_BASE_URL"];
/// Every group; a function reads the union of the groups it lists.
pub const ALL: &[&[&str]] = &[
    LEDGER_SETTINGS,
    DEADLINE_SETTINGS,
    &[
        "REFUND_QUEUE_URL",
        "ALIPAY_NOTIFY_VERIFY",
        "DEVICE_EVENTS_QUEUE_URL",
    ],
    ADMIN_SETTINGS,
    ALIPAY_SETTINGS,
    MERCHANT_SETTINGS,
];

/// The names of `groups`, in order, each once.
pub fn names(groups: &[&[&'static str]]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for name in groups.iter().flat_map(|g| g.iter()) {
        if !out.contains(name) {
            out.push(name);
        }
    }
    out
}
