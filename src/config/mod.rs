//! Configuration: embedded defaults, then a TOML file, then `TRULAYER_`
//! environment variables (`__` separates section and key). Unknown keys are
//! refused; `validate` checks what serde cannot and says how to fix it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Data, Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod plans;
mod sections;
pub use plans::{Plan, PlanLimits, PlansConfig};
pub use sections::{AlertsConfig, EncryptionConfig, PrivacyConfig, WebhooksConfig};

/// The commented default configuration, printed by `trulayer-server config default`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Sections a `TRULAYER_SECTION__KEY` variable may address.
const SECTIONS: &[&str] = &[
    "server", "storage", "limits", "log", "init", "plans", "pricing", "metrics", "eval", "alerts",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    #[serde(default)]
    pub init: InitConfig,
    pub plans: PlansConfig,
    /// Prices over the built-in table: `[pricing."model-name"]`.
    #[serde(default)]
    pub pricing: std::collections::BTreeMap<String, crate::pricing::PriceConfig>,
    #[serde(default)]
    pub metrics: MetricsConfig,
    pub eval: EvalConfig,
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    #[serde(default)]
    pub encryption: EncryptionConfig,
    #[serde(default)]
    pub privacy: PrivacyConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// The evaluation queue, `[eval]`, and its LLM judge, `[eval.judge]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Calls to the LLM judge made at once.
    pub workers: usize,
    /// The longest one attempt at an evaluation may take, in seconds.
    pub timeout_s: u64,
    /// Attempts before a judge that keeps answering 429 or 5xx, or keeps
    /// timing out, fails the evaluation.
    pub max_attempts: u32,
    /// The wait before the first retry, in milliseconds; it doubles with each
    /// attempt, up to five minutes.
    pub retry_base_ms: u64,
    /// Items of one dataset run worked on at once.
    pub run_concurrency: usize,
    /// Items of one organisation's runs worked on at once, all runs together.
    pub tenant_run_concurrency: usize,
    /// Items a run may take: a larger dataset is refused (0: no cap).
    pub max_run_items: u64,
    /// Where LLM evaluations are sent; none: they fail, and nothing is sent.
    #[serde(default)]
    pub judge: Option<crate::eval::judge::JudgeConfig>,
    /// Where a dataset run's version sends each item for a fresh answer;
    /// none: to the judge's endpoint; neither: such runs fail their items.
    #[serde(default)]
    pub model: Option<crate::eval::judge::JudgeConfig>,
}

/// Where the Prometheus metrics are served; neither set: nowhere.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` on the main listener to scrapers sending this
    /// bearer token.
    pub token: Option<String>,
    /// Serve `/metrics` without a token on this address, plain HTTP.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub shutdown_timeout_s: u64,
    /// Connections open at once; 0: the open-file limit less what the
    /// server needs for itself.
    pub max_connections: usize,
    /// Seconds a connection may stay open with no request in progress.
    pub idle_timeout_s: u64,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Normal,
    Full,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub synchronous: Synchronous,
    pub read_connections: u32,
    /// A cap on the data the database holds; 0 means none.
    pub max_db_size: ByteSize,
    /// What happens as the database reaches `max_db_size`.
    pub when_full: WhenFull,
    /// Seconds between retention passes.
    pub purge_interval_s: u64,
}

/// What the server does as the database reaches `storage.max_db_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Ingest is answered 507 until retention or an operator frees space.
    Refuse,
    /// The traces stored first are deleted to make room.
    PurgeOldest,
}

/// A size in bytes, written as a number of bytes or as a string with a
/// unit: `"500MB"`, `"10 GiB"`, `"1.5GB"` (KB/MB/GB/TB are powers of 1000,
/// KiB/MiB/GiB/TiB of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Option<ByteSize> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().ok()?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "mb" => 1000_u64.pow(2),
            "gb" => 1000_u64.pow(3),
            "tb" => 1000_u64.pow(4),
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => return None,
        };
        let bytes = number * scale as f64;
        (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64)
            .then_some(ByteSize(bytes as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Bytes(n)) => Ok(ByteSize(n)),
            Ok(Raw::Text(t)) => ByteSize::parse(&t).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{t:?} is not a size; use a number of bytes or a string such as \"10GiB\" or \"500MB\""
                ))
            }),
            Err(_) => Err(serde::de::Error::custom(
                "must be a number of bytes or a string such as \"10GiB\" or \"500MB\"",
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub json_body_max_bytes: usize,
    /// The largest body of `POST /v1/ingest/batch`, which the SDK fills
    /// with its whole queue.
    pub batch_body_max_bytes: usize,
    pub otlp_body_max_bytes: usize,
    /// The most spans one OTLP request may hold.
    pub otlp_max_spans: usize,
    /// The most spans one JSON ingest request may hold, all its traces together.
    pub batch_max_spans: usize,
    /// Memory that request bodies and their decoding may take at once, all
    /// requests together.
    pub request_memory_max_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

/// Values for the very first start of an empty data directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    pub org: Option<String>,
    pub project: Option<String>,
    pub api_key: Option<String>,
    pub api_key_file: Option<PathBuf>,
    pub admin_email: Option<String>,
    pub admin_password: Option<String>,
    pub admin_password_file: Option<PathBuf>,
    /// The first organisation's plan (default: enterprise).
    pub plan: Option<Plan>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration error: {}", describe(.0))]
    Load(Box<figment::Error>),
    #[error("configuration error: {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("configuration error: environment variable {0} does not name a known section ({sections}); fix or unset it", sections = SECTIONS.join(", "))]
    UnknownEnv(String),
}

/// One line per problem: the key, what is wrong, and where the value came from.
fn describe(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let origin = match &e.metadata {
                Some(m) if m.name.contains("environment") => format!(
                    " (from environment variable TRULAYER_{})",
                    e.path
                        .iter()
                        .map(|p| p.to_ascii_uppercase())
                        .collect::<Vec<_>>()
                        .join("__")
                ),
                Some(m) => match &m.source {
                    Some(source) => format!(" (in {source})"),
                    None => format!(" (in {})", m.name),
                },
                None => String::new(),
            };
            if key.is_empty() {
                format!("{}{origin}", e.kind)
            } else {
                format!("{key}: {}{origin}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

impl Config {
    /// Loads defaults, then `file` (if any), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match file {
            Some(path) if !path.is_file() => {
                return Err(invalid(
                    "--config",
                    format!("{} is not a readable file", path.display()),
                ))
            }
            Some(path) => Some(Toml::file_exact(path)),
            None => None,
        };
        // Variables without `__` (such as the SDK's own TRULAYER_MODE) are not
        // ours; one with `__` that names no known section is a typo.
        // vars_os: one non-UTF-8 variable in the environment must not panic.
        for name in std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()) {
            if let Some((section, _)) = name
                .strip_prefix("TRULAYER_")
                .and_then(|rest| rest.split_once("__"))
            {
                if !SECTIONS.contains(&section.to_ascii_lowercase().as_str()) {
                    return Err(ConfigError::UnknownEnv(name));
                }
            }
        }
        let env = Env::prefixed("TRULAYER_")
            .filter(|key| {
                key.as_str().split_once("__").is_some_and(|(section, _)| {
                    SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(section))
                })
            })
            .split("__")
            .map(|key| key.as_str().to_ascii_lowercase().into());
        Config::layered(file, Some(env))
    }

    /// The defaults with `toml`, the text of a config file, over them: what
    /// `load` makes of a file with that text, leaving out the environment.
    /// Pure, so the loader can be fuzzed and tested without files.
    pub fn from_toml_str(toml: &str) -> Result<Config, ConfigError> {
        Config::layered(Some(Toml::string(toml)), None)
    }

    /// Defaults, then the file, then the environment; extracted and validated.
    fn layered(file: Option<Data<Toml>>, env: Option<Env>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            figment = figment.merge(file);
        }
        if let Some(env) = env {
            figment = figment.merge(env);
        }
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.encryption.key()?;
        if self.storage.data_dir.as_os_str().is_empty() {
            return Err(invalid("storage.data_dir", "must not be empty"));
        }
        if !(1..=64).contains(&self.storage.read_connections) {
            return Err(invalid(
                "storage.read_connections",
                "must be between 1 and 64",
            ));
        }
        if !(1..=86_400).contains(&self.storage.purge_interval_s) {
            return Err(invalid(
                "storage.purge_interval_s",
                "must be between 1 and 86400 seconds",
            ));
        }
        let cap = self.storage.max_db_size.0;
        if cap != 0 && cap < 1 << 20 {
            return Err(invalid(
                "storage.max_db_size",
                "must be 0 (no cap) or at least 1MiB",
            ));
        }
        for (model, price) in &self.pricing {
            // Bounded, so that no token count a span can carry, times its
            // price, makes a cost too large to be a finite number.
            let usable = |usd: f64| (0.0..=MAX_PRICE_USD).contains(&usd);
            if !usable(price.input) || !usable(price.output) {
                return Err(invalid(
                    "pricing",
                    format!(
                        "{model:?}: input and output must be USD per million tokens, from 0 to {MAX_PRICE_USD}"
                    ),
                ));
            }
        }
        if !(1..=3600).contains(&self.server.idle_timeout_s) {
            return Err(invalid(
                "server.idle_timeout_s",
                "must be between 1 and 3600 seconds",
            ));
        }
        if !(self.server.max_connections == 0 || self.server.max_connections >= 8) {
            return Err(invalid(
                "server.max_connections",
                "must be 0 (from the open-file limit) or at least 8",
            ));
        }
        if !(1024..=1 << 30).contains(&self.limits.otlp_body_max_bytes) {
            return Err(invalid(
                "limits.otlp_body_max_bytes",
                "must be between 1024 and 1073741824 bytes",
            ));
        }
        if !(1024..=1 << 30).contains(&self.limits.json_body_max_bytes) {
            return Err(invalid(
                "limits.json_body_max_bytes",
                "must be between 1024 and 1073741824 bytes",
            ));
        }
        if !(1024..=1 << 30).contains(&self.limits.batch_body_max_bytes) {
            return Err(invalid(
                "limits.batch_body_max_bytes",
                "must be between 1024 and 1073741824 bytes",
            ));
        }
        for (key, value) in [
            ("limits.otlp_max_spans", self.limits.otlp_max_spans),
            ("limits.batch_max_spans", self.limits.batch_max_spans),
        ] {
            if !(1..=10_000_000).contains(&value) {
                return Err(invalid(key, "must be between 1 and 10000000"));
            }
        }
        let largest = self
            .limits
            .json_body_max_bytes
            .max(self.limits.batch_body_max_bytes)
            .max(self.limits.otlp_body_max_bytes);
        if !(largest..=1 << 40).contains(&self.limits.request_memory_max_bytes) {
            return Err(invalid(
                "limits.request_memory_max_bytes",
                format!(
                    "must be at least the largest body limit ({largest} bytes), \
                     or no body that large could ever be taken"
                ),
            ));
        }
        if self
            .metrics
            .token
            .as_ref()
            .is_some_and(|t| t.len() < 16 || t.chars().any(char::is_whitespace))
        {
            return Err(invalid(
                "metrics.token",
                "must be at least 16 characters, without spaces",
            ));
        }
        if !(1..=256).contains(&self.eval.workers) {
            return Err(invalid("eval.workers", "must be between 1 and 256"));
        }
        if !(1..=3600).contains(&self.eval.timeout_s) {
            return Err(invalid(
                "eval.timeout_s",
                "must be between 1 and 3600 seconds",
            ));
        }
        if !(1..=20).contains(&self.eval.max_attempts) {
            return Err(invalid("eval.max_attempts", "must be between 1 and 20"));
        }
        if !(1..=300_000).contains(&self.eval.retry_base_ms) {
            return Err(invalid(
                "eval.retry_base_ms",
                "must be between 1 and 300000 milliseconds",
            ));
        }
        if !(50..=3_600_000).contains(&self.alerts.interval_ms) {
            return Err(invalid(
                "alerts.interval_ms",
                "must be between 50 and 3600000 milliseconds",
            ));
        }
        if !(1..=10_000).contains(&self.alerts.max_rules) {
            return Err(invalid("alerts.max_rules", "must be between 1 and 10000"));
        }
        if !(1..=86_400).contains(&self.alerts.detect_window_s) {
            return Err(invalid(
                "alerts.detect_window_s",
                "must be between 1 and 86400 seconds",
            ));
        }
        if !(4..=10_000).contains(&self.alerts.baseline_windows) {
            return Err(invalid(
                "alerts.baseline_windows",
                "must be between 4 and 10000",
            ));
        }
        if !(3..=self.alerts.baseline_windows).contains(&self.alerts.min_baseline_windows) {
            return Err(invalid(
                "alerts.min_baseline_windows",
                "must be between 3 and alerts.baseline_windows",
            ));
        }
        if !(self.alerts.sensitivity.is_finite()
            && (1.0..=100.0).contains(&self.alerts.sensitivity))
        {
            return Err(invalid("alerts.sensitivity", "must be between 1 and 100"));
        }
        if !(1..=1_000_000).contains(&self.alerts.min_traces) {
            return Err(invalid(
                "alerts.min_traces",
                "must be between 1 and 1000000",
            ));
        }
        for (key, list) in [
            ("webhooks.allow", &self.webhooks.allow),
            ("webhooks.deny", &self.webhooks.deny),
        ] {
            for net in list {
                if crate::webhooks::Net::parse(net).is_none() {
                    return Err(invalid(key, format!("{net:?} is not a CIDR network")));
                }
            }
        }
        let key = &self.privacy.subject_metadata_key;
        if key.len() > 128 || key.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
            return Err(invalid(
                "privacy.subject_metadata_key",
                "at most 128 characters, without quotes, backslashes or control characters",
            ));
        }
        if !(1..=8760).contains(&self.privacy.export_keep_h) {
            return Err(invalid(
                "privacy.export_keep_h",
                "must be between 1 and 8760 hours",
            ));
        }
        if !(1..=300).contains(&self.webhooks.timeout_s) {
            return Err(invalid(
                "webhooks.timeout_s",
                "must be between 1 and 300 seconds",
            ));
        }
        if !(1..=64).contains(&self.webhooks.concurrency) {
            return Err(invalid("webhooks.concurrency", "must be between 1 and 64"));
        }
        if !(1..=3_600_000).contains(&self.webhooks.retry_base_ms) {
            return Err(invalid(
                "webhooks.retry_base_ms",
                "must be between 1 and 3600000 milliseconds",
            ));
        }
        if !(1..=720).contains(&self.webhooks.retry_for_h) {
            return Err(invalid(
                "webhooks.retry_for_h",
                "must be between 1 and 720 hours",
            ));
        }
        if !(1..=256).contains(&self.eval.run_concurrency) {
            return Err(invalid("eval.run_concurrency", "must be between 1 and 256"));
        }
        if !(1..=256).contains(&self.eval.tenant_run_concurrency) {
            return Err(invalid(
                "eval.tenant_run_concurrency",
                "must be between 1 and 256",
            ));
        }
        if let Some(judge) = &self.eval.judge {
            judge.validate().map_err(|reason| {
                let reason = reason.strip_prefix("eval.judge.").unwrap_or(&reason);
                invalid("eval.judge", reason)
            })?;
        }
        if let Some(model) = &self.eval.model {
            model.validate().map_err(|reason| {
                let reason = reason.strip_prefix("eval.judge.").unwrap_or(&reason);
                invalid("eval.model", reason)
            })?;
        }
        if !valid_log_level(&self.log.level) {
            return Err(invalid(
                "log.level",
                format!(
                    "{:?} is not a level; use error, warn, info, debug or trace",
                    self.log.level
                ),
            ));
        }
        if let Some(tls) = &self.server.tls {
            for (key, path) in [("server.tls.cert", &tls.cert), ("server.tls.key", &tls.key)] {
                if !path.is_file() {
                    return Err(invalid(
                        key,
                        format!("{} is not a readable file", path.display()),
                    ));
                }
            }
        }
        self.init.validate()
    }
}

/// The highest price per million tokens a config may set: a dollar a token.
pub const MAX_PRICE_USD: f64 = 1_000_000.0;

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// A level name, or comma-separated directives such as `info,trulayer_server=debug`
/// whose every level is a level name.
fn valid_log_level(spec: &str) -> bool {
    let is_level = |l: &str| LEVELS.iter().any(|x| x.eq_ignore_ascii_case(l.trim()));
    !spec.trim().is_empty()
        && spec
            .split(',')
            .all(|directive| match directive.rsplit_once('=') {
                Some((target, level)) => !target.trim().is_empty() && is_level(level),
                None => is_level(directive),
            })
        && tracing_subscriber::EnvFilter::try_new(spec).is_ok()
}

impl InitConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.api_key.is_some() && self.api_key_file.is_some() {
            return Err(invalid(
                "init.api_key",
                "set either api_key or api_key_file, not both",
            ));
        }
        if self.admin_password.is_some() && self.admin_password_file.is_some() {
            return Err(invalid(
                "init.admin_password",
                "set either admin_password or admin_password_file, not both",
            ));
        }
        if let Some(key) = self.api_key()? {
            crate::auth::check_chosen_key(&key)
                .map_err(|reason| invalid("init.api_key", reason))?;
        }
        if let Some(password) = self.admin_password()? {
            crate::auth::Password::parse(password)
                .map_err(|why| invalid("init.admin_password", why))?;
        }
        if let Some(email) = &self.admin_email {
            crate::auth::Email::parse(email).map_err(|why| invalid("init.admin_email", why))?;
        }
        for (key, value) in [("init.org", &self.org), ("init.project", &self.project)] {
            if let Some(v) = value {
                if v.trim().is_empty() || v.chars().count() > 128 {
                    return Err(invalid(key, "must be 1 to 128 characters"));
                }
            }
        }
        Ok(())
    }

    /// The chosen first API key, from `api_key` or the file `api_key_file` names.
    pub fn api_key(&self) -> Result<Option<String>, ConfigError> {
        secret(&self.api_key, &self.api_key_file, "init.api_key_file")
    }

    /// The chosen owner password, from `admin_password` or `admin_password_file`.
    pub fn admin_password(&self) -> Result<Option<String>, ConfigError> {
        secret(
            &self.admin_password,
            &self.admin_password_file,
            "init.admin_password_file",
        )
    }
}

fn secret(
    value: &Option<String>,
    file: &Option<PathBuf>,
    key: &'static str,
) -> Result<Option<String>, ConfigError> {
    if let Some(v) = value {
        return Ok(Some(v.clone()));
    }
    match file {
        None => Ok(None),
        Some(path) => std::fs::read_to_string(path)
            .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
            .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::{ByteSize, Config, ConfigError};

    #[test]
    fn a_files_text_is_read_as_load_reads_the_file() {
        let text = "[storage]\ndata_dir = \"/srv/trulayer\"\nmax_db_size = \"2GiB\"\n";
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trulayer.toml");
        std::fs::write(&path, text).expect("write");
        let from_text = Config::from_toml_str(text).expect("valid");
        let from_file = Config::load(Some(&path)).expect("valid");
        assert_eq!(from_text.storage.data_dir, from_file.storage.data_dir);
        assert_eq!(from_text.storage.max_db_size, ByteSize(2 << 30));
        assert_eq!(
            serde_json::to_value(&from_text).expect("json"),
            serde_json::to_value(&from_file).expect("json")
        );
    }

    #[test]
    fn prices_beyond_a_dollar_a_token_are_refused() {
        let price = |usd: &str| {
            Config::from_toml_str(&format!("[pricing.\"m\"]\ninput = {usd}\noutput = 0\n"))
        };
        assert!(price("1000000").is_ok());
        for usd in ["1e308", "1000000.5", "-1", "inf", "nan"] {
            assert!(
                matches!(price(usd), Err(ConfigError::Invalid { key: "pricing", .. })),
                "{usd}"
            );
        }
        // The costs of the largest token counts at the highest price stay finite.
        let config = price("1000000").expect("valid");
        let pricing = crate::pricing::Pricing::new(&config.pricing);
        let cost = pricing.cost("m", i64::MAX, i64::MAX).expect("priced");
        assert!(cost.is_finite());
    }

    #[test]
    fn alert_settings_are_checked() {
        for (text, key) in [
            ("[alerts]\ninterval_ms = 10\n", "alerts.interval_ms"),
            ("[alerts]\nsensitivity = 0.5\n", "alerts.sensitivity"),
            (
                "[alerts]\nbaseline_windows = 10\nmin_baseline_windows = 20\n",
                "alerts.min_baseline_windows",
            ),
            ("[alerts]\nmin_traces = 0\n", "alerts.min_traces"),
            ("[alerts]\ndetect_window_s = 0\n", "alerts.detect_window_s"),
        ] {
            let got = Config::from_toml_str(text);
            assert!(
                matches!(&got, Err(ConfigError::Invalid { key: k, .. }) if *k == key),
                "{text}: {got:?}"
            );
        }
        let config = Config::from_toml_str("[alerts]\ndetection = false\n").expect("valid");
        assert!(!config.alerts.detection);
        assert_eq!(config.alerts.interval_ms, 15_000);
    }

    #[test]
    fn text_is_checked_as_a_file_is() {
        let unknown = Config::from_toml_str("[storage]\ndata_dirr = \"/srv\"\n");
        assert!(
            matches!(&unknown, Err(ConfigError::Load(e)) if e.to_string().contains("data_dirr")),
            "{unknown:?}"
        );
        let invalid = Config::from_toml_str("[storage]\nread_connections = 0\n");
        assert!(
            matches!(
                invalid,
                Err(ConfigError::Invalid {
                    key: "storage.read_connections",
                    ..
                })
            ),
            "{invalid:?}"
        );
    }

    #[test]
    fn sizes_are_bytes_or_a_number_with_a_unit() {
        for (text, bytes) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("10GiB", 10 << 30),
            ("10 gib", 10 << 30),
            ("500MB", 500_000_000),
            ("1.5GB", 1_500_000_000),
            ("2TiB", 2 << 40),
            ("512 b", 512),
        ] {
            assert_eq!(ByteSize::parse(text), Some(ByteSize(bytes)), "{text}");
        }
        for text in ["", "ten", "10 GiBs", "-5MB", "1e3", "GB", "1.2.3MB"] {
            assert_eq!(ByteSize::parse(text), None, "{text}");
        }
    }
}
