//! The environment, read once at start-up, with secret references resolved.
//!
//! Any setting may hold, instead of its value, a reference resolved once at start-up:
//! - `secretsmanager:<secret id or ARN>` — the secret's string; `secretsmanager:<id>#<field>` — one field
//!   of a JSON secret (one secret can hold all the Alipay keys);
//! - `ssm:<parameter name or ARN>` — a parameter, decrypted if it is a `SecureString`.
//!
//! Each secret or parameter is fetched once however many settings name it. A reference that cannot be
//! resolved stops start-up with a message naming the setting (and the secret, never its value).

use std::collections::{BTreeMap, HashMap};

use aws_config::SdkConfig;
use vendpay_api::settings::{invalid, present, SettingError};

/// A snapshot of the settings a function reads.
#[derive(Clone, Default)]
pub struct Env {
    values: BTreeMap<String, String>,
}

/// Values can be keys: never printed.
impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

/// Where a setting's value really lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Secret { id: String, field: Option<String> },
    Parameter { name: String },
}

impl Reference {
    /// `None` for a plain value.
    pub fn parse(value: &str) -> Option<Reference> {
        let v = value.trim();
        if let Some(rest) = v.strip_prefix("secretsmanager:") {
            return Some(secret(rest));
        }
        if v.starts_with("arn:aws") && v.contains(":secretsmanager:") {
            return Some(secret(v));
        }
        if let Some(rest) = v.strip_prefix("ssm:") {
            return Some(Reference::Parameter {
                name: rest.to_owned(),
            });
        }
        if v.starts_with("arn:aws") && v.contains(":ssm:") && v.contains(":parameter/") {
            return Some(Reference::Parameter { name: v.to_owned() });
        }
        None
    }
}

fn secret(rest: &str) -> Reference {
    match rest.rsplit_once('#') {
        Some((id, field)) => Reference::Secret {
            id: id.to_owned(),
            field: Some(field.to_owned()),
        },
        None => Reference::Secret {
            id: rest.to_owned(),
            field: None,
        },
    }
}

impl Env {
    /// Reads `names` from the process environment.
    pub fn from_process(names: &[&'static str]) -> Result<Env, SettingError> {
        let mut values = BTreeMap::new();
        for &name in names {
            match std::env::var(name) {
                Ok(v) => {
                    values.insert(name.to_owned(), v);
                }
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(invalid(name, "is not valid UTF-8"))
                }
            }
        }
        Ok(Env { values })
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The same settings with `name` set to `value` unless it is set already.
    pub fn or_with(mut self, name: &str, value: impl Into<String>) -> Env {
        if self.get(name).is_none() {
            self.values.insert(name.to_owned(), value.into());
        }
        self
    }

    /// The value, trimmed; blank counts as absent.
    pub fn get(&self, name: &str) -> Option<String> {
        present(&|n: &str| self.values.get(n).cloned(), name)
    }

    pub fn required(&self, name: &'static str) -> Result<String, SettingError> {
        self.get(name).ok_or_else(|| invalid(name, "is not set"))
    }

    /// A lookup closure for the parsers that take one (`AlipayConfig::from_lookup`, ...).
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| self.get(name)
    }

    /// Replaces every reference by the value it names (one fetch per secret or parameter).
    pub async fn resolve(self, sdk: &SdkConfig) -> Result<Env, SettingError> {
        let refs: Vec<(String, Reference)> = self
            .values
            .iter()
            .filter_map(|(k, v)| Reference::parse(v).map(|r| (k.clone(), r)))
            .collect();
        if refs.is_empty() {
            return Ok(self);
        }
        let mut secrets: HashMap<String, String> = HashMap::new();
        let mut parameters: HashMap<String, String> = HashMap::new();
        let mut values = self.values;
        let sm = refs
            .iter()
            .any(|(_, r)| matches!(r, Reference::Secret { .. }))
            .then(|| aws_sdk_secretsmanager::Client::new(sdk));
        let ssm = refs
            .iter()
            .any(|(_, r)| matches!(r, Reference::Parameter { .. }))
            .then(|| aws_sdk_ssm::Client::new(sdk));
        for (name, reference) in refs {
            let setting = static_name(&name);
            let value = match (&reference, &sm, &ssm) {
                (Reference::Secret { id, field }, Some(client), _) => {
                    if !secrets.contains_key(id) {
                        let got = client
                            .get_secret_value()
                            .secret_id(id)
                            .send()
                            .await
                            .map_err(|e| {
                                invalid(
                                    setting,
                                    format!(
                                        "secret {id:?} could not be read: {}",
                                        aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                                    ),
                                )
                            })?;
                        let text = got.secret_string().ok_or_else(|| {
                            invalid(setting, format!("secret {id:?} has no string value"))
                        })?;
                        secrets.insert(id.clone(), text.to_owned());
                    }
                    let text = secrets.get(id).cloned().unwrap_or_default();
                    match field {
                        None => text,
                        Some(f) => json_field(&text, f).map_err(|reason| {
                            invalid(setting, format!("secret {id:?}: {reason}"))
                        })?,
                    }
                }
                (Reference::Parameter { name: p }, _, Some(client)) => {
                    if !parameters.contains_key(p) {
                        let got = client
                            .get_parameter()
                            .name(p)
                            .with_decryption(true)
                            .send()
                            .await
                            .map_err(|e| {
                                invalid(
                                    setting,
                                    format!(
                                        "parameter {p:?} could not be read: {}",
                                        aws_sdk_ssm::error::DisplayErrorContext(&e)
                                    ),
                                )
                            })?;
                        let v = got.parameter().and_then(|x| x.value()).ok_or_else(|| {
                            invalid(setting, format!("parameter {p:?} has no value"))
                        })?;
                        parameters.insert(p.clone(), v.to_owned());
                    }
                    parameters.get(p).cloned().unwrap_or_default()
                }
                _ => return Err(invalid(setting, "unresolvable reference")),
            };
            values.insert(name, value);
        }
        Ok(Env { values })
    }
}

/// One field of a JSON object secret, as a string.
fn json_field(text: &str, field: &str) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| "is not a JSON object, so it has no fields".to_owned())?;
    match value.get(field) {
        // An empty field counts as unset: a settings check then names the setting if it is required
        // (an RSA2 deployment leaves `md5_key` empty).
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("field {field:?} is not a string")),
        None => Err(format!("has no field {field:?}")),
    }
}

/// Setting names come from the function's fixed list; errors carry them as `&'static str`.
fn static_name(name: &str) -> &'static str {
    crate::setting_groups::ALL
        .iter()
        .flat_map(|g| g.iter())
        .find(|s| **s == name)
        .copied()
        .unwrap_or("(setting)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_recognised() {
        assert_eq!(Reference::parse("-----BEGIN PRIVATE KEY-----"), None);
        assert_eq!(Reference::parse("300"), None);
        assert_eq!(
            Reference::parse("secretsmanager:vendpay/alipay#private_key"),
            Some(Reference::Secret {
                id: "vendpay/alipay".into(),
                field: Some("private_key".into())
            })
        );
        assert_eq!(
            Reference::parse("arn:aws:secretsmanager:us-east-1:123:secret:vp-AbC#md5_key"),
            Some(Reference::Secret {
                id: "arn:aws:secretsmanager:us-east-1:123:secret:vp-AbC".into(),
                field: Some("md5_key".into())
            })
        );
        assert_eq!(
            Reference::parse("ssm:/vendpay/device-key"),
            Some(Reference::Parameter {
                name: "/vendpay/device-key".into()
            })
        );
        assert_eq!(
            Reference::parse("arn:aws:ssm:us-east-1:123:parameter/vp/k"),
            Some(Reference::Parameter {
                name: "arn:aws:ssm:us-east-1:123:parameter/vp/k".into()
            })
        );
    }

    #[test]
    fn json_fields_are_read_with_clear_errors() {
        assert_eq!(json_field(r#"{"a":"x"}"#, "a"), Ok("x".into()));
        assert_eq!(json_field(r#"{"a":""}"#, "a"), Ok(String::new()));
        assert!(json_field(r#"{"a":1}"#, "a")
            .unwrap_or_else(|e| e)
            .contains("not a string"));
        assert!(json_field(r#"{"a":"x"}"#, "b")
            .unwrap_or_else(|e| e)
            .contains("no field"));
        assert!(json_field("plain", "b")
            .unwrap_or_else(|e| e)
            .contains("not a JSON object"));
    }

    #[test]
    fn blank_is_absent_and_required_names_the_setting() {
        let env = Env::from_pairs([("TABLE_NAME", "  "), ("X", " v ")]);
        assert_eq!(env.get("X").as_deref(), Some("v"));
        assert_eq!(
            env.required("TABLE_NAME").map_err(|e| e.to_string()),
            Err("TABLE_NAME: is not set".to_owned())
        );
    }
}
