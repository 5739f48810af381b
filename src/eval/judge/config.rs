//! `[eval.judge]`: the judge's endpoint, model, key and limits, checked
//! when the configuration is loaded.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// `[eval.judge]` in the TOML config.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    pub provider: Provider,
    /// `http://127.0.0.1:11434/v1` (openai) or `https://api.anthropic.com` (anthropic).
    pub base_url: String,
    pub model: String,
    #[serde(default)]
    pub api_key: Option<String>,
    /// The name of an environment variable holding the key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Per request, in seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// Trace text (input, output and context together) sent per evaluation.
    #[serde(default = "default_max_input_chars")]
    pub max_input_chars: usize,
    /// The judge's reply budget, in tokens.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// An extra PEM CA for an endpoint with a private certificate.
    #[serde(default)]
    pub ca_cert: Option<std::path::PathBuf>,
}

fn default_timeout_s() -> u64 {
    60
}
fn default_max_input_chars() -> usize {
    20_000
}
fn default_max_tokens() -> u32 {
    512
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// OpenAI-compatible chat completions: OpenAI, vLLM, Ollama, LM Studio.
    Openai,
    /// The Anthropic Messages API.
    Anthropic,
}

impl Provider {
    pub const ALL: [Provider; 2] = [Provider::Openai, Provider::Anthropic];

    /// The provider's name in the config and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Openai => "openai",
            Provider::Anthropic => "anthropic",
        }
    }

    pub fn parse(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl JudgeConfig {
    /// What serde cannot check; the message names the key and how to fix it.
    pub fn validate(&self) -> Result<(), String> {
        self.endpoint()?;
        if self.model.trim().is_empty() {
            return Err(bad(
                "model",
                "must name the judge model, e.g. \"llama3.1:8b\"",
            ));
        }
        if !(1..=3600).contains(&self.timeout_s) {
            return Err(bad("timeout_s", "must be between 1 and 3600 seconds"));
        }
        if self.max_input_chars < 1000 {
            return Err(bad("max_input_chars", "must be at least 1000 characters"));
        }
        if !(16..=32_768).contains(&self.max_tokens) {
            return Err(bad("max_tokens", "must be between 16 and 32768"));
        }
        if self.api_key.is_some() && self.api_key_env.is_some() {
            return Err(bad(
                "api_key",
                "set either api_key or api_key_env, not both",
            ));
        }
        if self
            .api_key
            .as_deref()
            .is_some_and(|key| key.trim().is_empty())
        {
            return Err(bad(
                "api_key",
                "must not be empty; remove it to send no key",
            ));
        }
        if let Some(name) = &self.api_key_env {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(bad(
                    "api_key_env",
                    "must be the name of an environment variable, e.g. \"JUDGE_API_KEY\"",
                ));
            }
        }
        if let Some(path) = &self.ca_cert {
            read_ca(path)?;
        }
        Ok(())
    }

    /// The URL requests are posted to.
    pub(super) fn endpoint(&self) -> Result<reqwest::Url, String> {
        let base = self.base_url.trim().trim_end_matches('/');
        let lower = base.to_ascii_lowercase();
        if !lower.starts_with("http://") && !lower.starts_with("https://") {
            return Err(bad(
                "base_url",
                "must start with http:// or https://, e.g. http://127.0.0.1:11434/v1",
            ));
        }
        let path = match self.provider {
            Provider::Openai => "/chat/completions",
            Provider::Anthropic if lower.ends_with("/v1") => "/messages",
            Provider::Anthropic => "/v1/messages",
        };
        let url = reqwest::Url::parse(&format!("{base}{path}"))
            .map_err(|e| bad("base_url", format!("{:?} is not a URL: {e}", self.base_url)))?;
        if url.host().is_none() {
            return Err(bad("base_url", "must name a host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad(
                "base_url",
                "must not have a query (?…) or fragment (#…)",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "base_url",
                "must not hold credentials; use api_key or api_key_env",
            ));
        }
        Ok(url)
    }

    /// The key from `api_key` or the environment variable `api_key_env` names.
    pub(super) fn resolve_key(&self) -> Result<Option<String>, String> {
        let key = match (&self.api_key, &self.api_key_env) {
            (Some(key), _) => key.clone(),
            (None, Some(name)) => std::env::var(name).map_err(|e| {
                bad(
                    "api_key_env",
                    format!("environment variable {name} {}", env_problem(&e)),
                )
            })?,
            (None, None) => return Ok(None),
        };
        let key = key.trim();
        if key.is_empty() {
            let source = match &self.api_key_env {
                Some(name) => format!("api_key_env: environment variable {name} is empty"),
                None => "api_key: must not be empty".to_owned(),
            };
            return Err(format!("eval.judge.{source}"));
        }
        Ok(Some(key.to_owned()))
    }
}

pub(super) fn bad(key: &str, problem: impl std::fmt::Display) -> String {
    format!("eval.judge.{key}: {problem}")
}

fn env_problem(err: &std::env::VarError) -> &'static str {
    match err {
        std::env::VarError::NotPresent => "is not set",
        std::env::VarError::NotUnicode(_) => "is not valid UTF-8",
    }
}

/// The certificates in a PEM file, each checked to be usable as a trust anchor.
pub(super) fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let pem =
        std::fs::read(path).map_err(|e| bad("ca_cert", format!("cannot read {shown}: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("ca_cert", format!("{shown} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "ca_cert",
            format!("{shown} holds no -----BEGIN CERTIFICATE----- block"),
        ));
    }
    let mut store = rustls::RootCertStore::empty();
    for (index, cert) in certs.iter().enumerate() {
        store.add(cert.clone()).map_err(|e| {
            bad(
                "ca_cert",
                format!("certificate {} in {shown} is not usable: {e}", index + 1),
            )
        })?;
    }
    Ok(certs)
}

#[cfg(test)]
pub(super) fn test_config(provider: Provider, base_url: &str) -> JudgeConfig {
    JudgeConfig {
        provider,
        base_url: base_url.to_owned(),
        model: "judge-model".to_owned(),
        api_key: None,
        api_key_env: None,
        timeout_s: default_timeout_s(),
        max_input_chars: default_max_input_chars(),
        max_tokens: default_max_tokens(),
        ca_cert: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::Judge;
    use super::test_config as config;
    use super::*;

    fn invalid(edit: impl FnOnce(&mut JudgeConfig)) -> String {
        let mut judge = config(Provider::Openai, "http://127.0.0.1:11434/v1");
        edit(&mut judge);
        match judge.validate() {
            Ok(()) => panic!("{judge:?} was accepted"),
            Err(problem) => problem,
        }
    }

    #[test]
    fn validate_names_the_key_at_fault() {
        assert_eq!(
            config(Provider::Openai, "http://127.0.0.1:11434/v1").validate(),
            Ok(())
        );
        assert_eq!(
            config(Provider::Anthropic, "https://api.anthropic.com").validate(),
            Ok(())
        );
        type Edit = fn(&mut JudgeConfig);
        let cases: &[(Edit, &str)] = &[
            (
                |c| c.base_url = "127.0.0.1:11434".into(),
                "eval.judge.base_url: must start with http:// or https://",
            ),
            (
                |c| c.base_url = "ftp://host".into(),
                "eval.judge.base_url: must start with",
            ),
            (|c| c.base_url = "http://".into(), "eval.judge.base_url:"),
            (
                |c| c.base_url = "http://[::1".into(),
                r#"eval.judge.base_url: "http://[::1" is not a URL"#,
            ),
            (
                |c| c.base_url = "http://h/v1?x=1".into(),
                "eval.judge.base_url: must not have a query",
            ),
            (
                |c| c.base_url = "http://u:p@h/v1".into(),
                "eval.judge.base_url: must not hold credentials",
            ),
            (|c| c.model = " ".into(), "eval.judge.model:"),
            (
                |c| c.timeout_s = 0,
                "eval.judge.timeout_s: must be between 1 and 3600",
            ),
            (|c| c.timeout_s = 3601, "eval.judge.timeout_s:"),
            (
                |c| c.max_input_chars = 999,
                "eval.judge.max_input_chars: must be at least 1000",
            ),
            (
                |c| c.max_tokens = 15,
                "eval.judge.max_tokens: must be between 16 and 32768",
            ),
            (|c| c.max_tokens = 32_769, "eval.judge.max_tokens:"),
            (
                |c| {
                    c.api_key = Some("k".into());
                    c.api_key_env = Some("K".into());
                },
                "eval.judge.api_key: set either api_key or api_key_env, not both",
            ),
            (
                |c| c.api_key = Some("".into()),
                "eval.judge.api_key: must not be empty",
            ),
            (
                |c| c.api_key_env = Some("A=B".into()),
                "eval.judge.api_key_env:",
            ),
            (
                |c| c.ca_cert = Some("/nonexistent/ca.pem".into()),
                "eval.judge.ca_cert: cannot read /nonexistent/ca.pem",
            ),
        ];
        for (edit, expected) in cases {
            let problem = invalid(*edit);
            assert!(
                problem.starts_with(expected),
                "{problem:?} should start with {expected:?}"
            );
        }
    }

    #[test]
    fn ca_cert_must_be_a_pem_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        assert!(invalid(|c| c.ca_cert = Some(garbage)).contains("no -----BEGIN CERTIFICATE-----"));
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(invalid(|c| c.ca_cert = Some(broken)).starts_with("eval.judge.ca_cert:"));

        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["judge.internal".to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, params.self_signed(&key).unwrap().pem()).unwrap();
        let mut judge = config(Provider::Openai, "https://judge.internal/v1");
        judge.ca_cert = Some(good);
        assert_eq!(judge.validate(), Ok(()));
        assert!(Judge::new(&judge).is_ok());
    }

    #[test]
    fn config_reads_toml_with_defaults_and_refuses_unknown_keys() {
        let parsed: JudgeConfig = serde_json::from_value(json!({
            "provider": "anthropic", "base_url": "https://api.anthropic.com", "model": "m"
        }))
        .unwrap();
        assert_eq!(parsed.provider, Provider::Anthropic);
        assert_eq!(
            (parsed.timeout_s, parsed.max_input_chars, parsed.max_tokens),
            (60, 20_000, 512)
        );
        assert!(serde_json::from_value::<JudgeConfig>(json!({
            "provider": "openai", "base_url": "http://h", "model": "m", "temprature": 0
        }))
        .is_err());
        assert!(serde_json::from_value::<JudgeConfig>(json!({
            "provider": "gemini", "base_url": "http://h", "model": "m"
        }))
        .is_err());
    }

    #[test]
    fn key_comes_from_the_named_environment_variable() {
        let mut judge = config(Provider::Openai, "http://127.0.0.1:9/v1");
        judge.api_key_env = Some("TRULAYER_TEST_JUDGE_KEY_THAT_IS_NOT_SET".to_owned());
        let problem = Judge::new(&judge).err().unwrap();
        assert_eq!(
            problem,
            "eval.judge.api_key_env: environment variable \
             TRULAYER_TEST_JUDGE_KEY_THAT_IS_NOT_SET is not set"
        );
        // Set by this test alone.
        std::env::set_var("TRULAYER_TEST_JUDGE_KEY", " sk-from-env\n");
        judge.api_key_env = Some("TRULAYER_TEST_JUDGE_KEY".to_owned());
        assert_eq!(judge.resolve_key(), Ok(Some("sk-from-env".to_owned())));
        let built = Judge::new(&judge).unwrap();
        assert_eq!(
            (built.model(), built.provider()),
            ("judge-model", Provider::Openai)
        );
        assert!(!format!("{built:?}").contains("sk-from-env"));
    }

    #[test]
    fn endpoints_follow_the_provider() {
        let url = |provider, base: &str| config(provider, base).endpoint().unwrap().to_string();
        assert_eq!(
            url(Provider::Openai, "http://h:1/v1/"),
            "http://h:1/v1/chat/completions"
        );
        assert_eq!(
            url(Provider::Anthropic, "https://api.anthropic.com"),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            url(Provider::Anthropic, "https://api.anthropic.com/v1/"),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            url(Provider::Anthropic, "http://gw/anthropic/"),
            "http://gw/anthropic/v1/messages"
        );
    }
}
