//! The per-feature sections of the configuration: `[encryption]`,
//! `[privacy]`, `[alerts]` and `[webhooks]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{invalid, secret, ConfigError};

/// `[encryption]`: the key that seals secrets kept at rest (organisations'
/// judge keys). Neither set: such secrets cannot be stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// 32 bytes in base64 or hex (`openssl rand -base64 32`).
    pub key: Option<String>,
    /// A file holding the key, readable by the service alone.
    pub key_file: Option<PathBuf>,
}

impl EncryptionConfig {
    /// The key's 32 bytes, when one is set.
    pub fn key(&self) -> Result<Option<[u8; crate::secrets::KEY_LEN]>, ConfigError> {
        if self.key.is_some() && self.key_file.is_some() {
            return Err(invalid(
                "encryption.key",
                "set either key or key_file, not both",
            ));
        }
        let name = if self.key.is_some() {
            "encryption.key"
        } else {
            "encryption.key_file"
        };
        secret(&self.key, &self.key_file, "encryption.key_file")?
            .map(|text| crate::secrets::SecretBox::parse_key(&text).map_err(|e| invalid(name, e)))
            .transpose()
    }

    /// The box sealing secrets under the key, when one is set.
    pub fn secret_box(&self) -> Result<Option<crate::secrets::SecretBox>, ConfigError> {
        Ok(self.key()?.map(|key| crate::secrets::SecretBox::new(&key)))
    }
}

/// Data subject requests, `[privacy]`: how a subject is found in the
/// traces, and how long an export is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// The key of a trace's metadata that holds the subject's id, besides
    /// the trace's external id and session id; empty: metadata is not
    /// looked at.
    pub subject_metadata_key: String,
    /// Hours an export file is kept after it is written.
    pub export_keep_h: u64,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            subject_metadata_key: "user_id".to_owned(),
            export_keep_h: 168,
        }
    }
}

/// Failure rules and the built-in anomaly detector, `[alerts]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// How often the enabled failure rules are evaluated, in milliseconds.
    pub interval_ms: u64,
    /// Failure rules an organisation may have.
    pub max_rules: usize,
    /// Whether the built-in detector looks for sudden changes.
    pub detection: bool,
    /// The detector's window, in seconds: the latest one is compared with
    /// the windows before it.
    pub detect_window_s: u64,
    /// Windows in the detector's baseline (288 five-minute windows: a day).
    pub baseline_windows: u64,
    /// Baseline windows with traffic needed before the detector judges.
    pub min_baseline_windows: u64,
    /// How far from the baseline's median, in robust standard deviations
    /// (1.4826 × MAD, floored), a window must be to be an anomaly.
    pub sensitivity: f64,
    /// Traces a window needs for its error rate, latency and cost to be
    /// judged, and the volume below which neither a spike nor a drop is.
    pub min_traces: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            interval_ms: 15_000,
            max_rules: 100,
            detection: true,
            detect_window_s: 300,
            baseline_windows: 288,
            min_baseline_windows: 12,
            sensitivity: 5.0,
            min_traces: 20,
        }
    }
}

/// Webhook deliveries, `[webhooks]`: which addresses they may go to, and
/// how they are sent and retried.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Networks (CIDR) webhooks may reach. Empty: every address but the
    /// refused ones; otherwise only these, and a refused range listed here
    /// (link-local, say) is allowed.
    pub allow: Vec<String>,
    /// Networks (CIDR) webhooks may never reach, over `allow`.
    pub deny: Vec<String>,
    /// The longest one attempt may take, in seconds.
    pub timeout_s: u64,
    /// Deliveries sent at once.
    pub concurrency: usize,
    /// The wait before the first retry, in milliseconds; it doubles with
    /// each attempt (with jitter), up to an hour.
    pub retry_base_ms: u64,
    /// How long a delivery is retried before it is given up, in hours.
    pub retry_for_h: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            allow: Vec::new(),
            deny: Vec::new(),
            timeout_s: 10,
            concurrency: 4,
            retry_base_ms: 30_000,
            retry_for_h: 48,
        }
    }
}
