//! Model prices, for spans that report tokens but no cost. A built-in table
//! of current models (USD per million input and output tokens, the vendors'
//! public list prices) is extended or overridden by `[pricing."model"]` in
//! the configuration. Model names are matched after normalising case,
//! provider prefixes, dots and dated or versioned suffixes, so
//! `gpt-4o-2024-08-06`, `openai/gpt-4o` and `GPT-4o` all price as `gpt-4o`.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

/// `[pricing."model-name"]`: a price, and other names for the same model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// USD per million input (prompt) tokens.
    pub input: f64,
    /// USD per million output (completion) tokens.
    pub output: f64,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// (model, input, output): USD per million tokens.
const BUILT_IN: &[(&str, f64, f64)] = &[
    // OpenAI
    ("gpt-5", 1.25, 10.0),
    ("gpt-5-mini", 0.25, 2.0),
    ("gpt-5-nano", 0.05, 0.40),
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("gpt-4o", 2.50, 10.0),
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4-turbo", 10.0, 30.0),
    ("gpt-4", 30.0, 60.0),
    ("gpt-3.5-turbo", 0.50, 1.50),
    ("o1", 15.0, 60.0),
    ("o1-mini", 1.10, 4.40),
    ("o3", 2.0, 8.0),
    ("o3-mini", 1.10, 4.40),
    ("o4-mini", 1.10, 4.40),
    ("text-embedding-3-small", 0.02, 0.0),
    ("text-embedding-3-large", 0.13, 0.0),
    // Anthropic
    ("claude-opus-4-1", 15.0, 75.0),
    ("claude-opus-4", 15.0, 75.0),
    ("claude-sonnet-4-5", 3.0, 15.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-haiku-4-5", 1.0, 5.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-3-5-haiku", 0.80, 4.0),
    ("claude-3-opus", 15.0, 75.0),
    ("claude-3-haiku", 0.25, 1.25),
    // Google
    ("gemini-2.5-pro", 1.25, 10.0),
    ("gemini-2.5-flash", 0.30, 2.50),
    ("gemini-2.0-flash", 0.10, 0.40),
    ("gemini-1.5-pro", 1.25, 5.0),
    ("gemini-1.5-flash", 0.075, 0.30),
    // Mistral
    ("mistral-large", 2.0, 6.0),
    ("mistral-medium", 0.40, 2.0),
    ("mistral-small", 0.10, 0.30),
    ("codestral", 0.30, 0.90),
    ("ministral-8b", 0.10, 0.10),
    // Meta (typical hosted prices)
    ("llama-4-maverick", 0.27, 0.85),
    ("llama-4-scout", 0.18, 0.59),
    ("llama-3.3-70b", 0.88, 0.88),
    ("llama-3.1-405b", 3.0, 3.0),
    ("llama-3.1-70b", 0.88, 0.88),
    ("llama-3.1-8b", 0.18, 0.18),
    // Cohere
    ("command-a", 2.50, 10.0),
    ("command-r-plus", 2.50, 10.0),
    ("command-r", 0.15, 0.60),
    ("command-r7b", 0.0375, 0.15),
];

/// Other names of built-in models.
const BUILT_IN_ALIASES: &[(&str, &str)] = &[
    ("chatgpt-4o-latest", "gpt-4o"),
    ("claude-instant", "claude-3-haiku"),
];

/// The price table in force.
#[derive(Debug, Default)]
pub struct Pricing {
    /// Normalised name → price.
    prices: HashMap<String, Price>,
    /// Names as sent → their price (or none), for the names seen so far.
    seen: Seen,
}

/// Most spans name one of a few models, and normalising a name costs more
/// than looking it up: each name's answer is kept, for up to `SEEN_MAX`
/// names of at most `SEEN_NAME_MAX` bytes (names are request input).
#[derive(Debug, Default)]
struct Seen(RwLock<HashMap<String, Option<Price>>>);

const SEEN_MAX: usize = 1024;
const SEEN_NAME_MAX: usize = 128;

impl Pricing {
    /// The built-in table with the configuration's entries over it.
    pub fn new(overrides: &BTreeMap<String, PriceConfig>) -> Pricing {
        let mut prices: HashMap<String, Price> = BUILT_IN
            .iter()
            .map(|(name, input, output)| {
                (
                    normalise(name),
                    Price {
                        input: *input,
                        output: *output,
                    },
                )
            })
            .collect();
        for (alias, target) in BUILT_IN_ALIASES {
            if let Some(price) = prices.get(&normalise(target)).copied() {
                prices.insert(normalise(alias), price);
            }
        }
        for (name, config) in overrides {
            let price = Price {
                input: config.input,
                output: config.output,
            };
            prices.insert(normalise(name), price);
            for alias in &config.aliases {
                prices.insert(normalise(alias), price);
            }
        }
        Pricing {
            prices,
            seen: Seen::default(),
        }
    }

    /// The price of `model`: an exact match after normalising, else the
    /// longest known model its name extends (`gpt-4o-mini-audio` →
    /// `gpt-4o-mini`).
    pub fn price(&self, model: &str) -> Option<Price> {
        if let Some(price) = self
            .seen
            .0
            .read()
            .ok()
            .and_then(|seen| seen.get(model).copied())
        {
            return price;
        }
        let price = self.look_up(model);
        if model.len() <= SEEN_NAME_MAX {
            if let Ok(mut seen) = self.seen.0.write() {
                if seen.len() < SEEN_MAX {
                    seen.insert(model.to_owned(), price);
                }
            }
        }
        price
    }

    fn look_up(&self, model: &str) -> Option<Price> {
        let name = normalise(model);
        if let Some(price) = self.prices.get(&name) {
            return Some(*price);
        }
        self.prices
            .iter()
            .filter(|(known, _)| {
                name.strip_prefix(known.as_str())
                    .is_some_and(|rest| rest.starts_with('-'))
            })
            .max_by_key(|(known, _)| known.len())
            .map(|(_, price)| *price)
    }

    /// The cost in USD of the tokens, when the model is known.
    pub fn cost(&self, model: &str, input_tokens: i64, output_tokens: i64) -> Option<f64> {
        let price = self.price(model)?;
        let cost = (input_tokens.max(0) as f64 * price.input
            + output_tokens.max(0) as f64 * price.output)
            / 1_000_000.0;
        // Within the bounds of a reported cost, whatever the tokens and prices.
        Some(cost.min(crate::model::MAX_COST_USD))
    }
}

/// Lowercase, without provider prefixes, with `-` for `.` and `_`, and
/// without dated, versioned or channel suffixes.
pub fn normalise(model: &str) -> String {
    let lower = model.trim().to_ascii_lowercase();
    // `openai/gpt-4o`, `models/gemini-1.5-pro`, `meta-llama/llama-3.1-8b`.
    let mut name = lower.rsplit('/').next().unwrap_or_default().to_owned();
    // Bedrock and Vertex: `anthropic.claude-3-5-sonnet-20240620-v1:0`,
    // `claude-3-5-sonnet@20240620`.
    for provider in ["anthropic.", "meta.", "cohere.", "mistral.", "amazon."] {
        if let Some(rest) = name.strip_prefix(provider) {
            name = rest.to_owned();
        }
    }
    if let Some((head, _)) = name.split_once('@') {
        name = head.to_owned();
    }
    if let Some((head, _)) = name.split_once(':') {
        name = head.to_owned();
    }
    let mut name = name.replace(['.', '_', ' '], "-");
    loop {
        let before = name.len();
        for suffix in ["-latest", "-preview", "-exp", "-instruct", "-chat"] {
            if let Some(rest) = name.strip_suffix(suffix) {
                name = rest.to_owned();
            }
        }
        name = strip_version_suffix(&name);
        if name.len() == before {
            return name;
        }
    }
}

/// Strips one trailing `-20240806`, `-2024-08-06`, `-0613`, `-001` or `-v1`.
fn strip_version_suffix(name: &str) -> String {
    // `-2024-08-06`: three numeric parts at the end.
    let parts: Vec<&str> = name.rsplitn(4, '-').collect();
    if parts.len() == 4
        && parts[0].len() == 2
        && parts[1].len() == 2
        && parts[2].len() == 4
        && parts[..3]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        return parts[3].to_owned();
    }
    let Some((head, last)) = name.rsplit_once('-') else {
        return name.to_owned();
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let dated = digits(last) && (last.len() == 8 || last.len() == 4 || last.len() == 3);
    let versioned = last
        .strip_prefix('v')
        .is_some_and(|rest| digits(rest) && rest.len() <= 2);
    if (dated || versioned) && !head.is_empty() {
        head.to_owned()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Pricing {
        Pricing::new(&BTreeMap::new())
    }

    #[test]
    fn names_seen_before_get_the_same_answer_and_the_memory_is_bounded() {
        let p = table();
        let names = [
            "gpt-4o-2024-08-06",
            "GPT-4o",
            "claude-3.5-sonnet",
            "my-own-model",
        ];
        let first: Vec<_> = names.iter().map(|n| p.price(n)).collect();
        let again: Vec<_> = names.iter().map(|n| p.price(n)).collect();
        let fresh: Vec<_> = names.iter().map(|n| p.look_up(n)).collect();
        assert_eq!(first, fresh);
        assert_eq!(again, fresh, "a remembered answer is the table's answer");
        assert!(first[0].is_some() && first[3].is_none());
        let seen = |p: &Pricing| p.seen.0.read().map(|s| s.len()).unwrap_or_default();
        assert_eq!(seen(&p), names.len());

        let long = format!("gpt-4o-{}", "x".repeat(SEEN_NAME_MAX));
        assert_eq!(p.price(&long), p.price("gpt-4o"));
        assert_eq!(seen(&p), names.len() + 1, "a long name is not kept");
        for i in 0..2 * SEEN_MAX {
            assert_eq!(p.price(&format!("model-{i}")), None);
        }
        assert_eq!(
            seen(&p),
            SEEN_MAX,
            "request names cannot grow it without end"
        );
        assert_eq!(p.price("gpt-4o-mini"), p.look_up("gpt-4o-mini"));
    }

    #[test]
    fn dated_prefixed_and_styled_names_find_their_model() {
        let p = table();
        let gpt4o = p.price("gpt-4o").expect("gpt-4o");
        for name in [
            "gpt-4o-2024-08-06",
            "GPT-4o",
            "openai/gpt-4o",
            "chatgpt-4o-latest",
            "gpt-4o-audio-preview",
        ] {
            assert_eq!(p.price(name), Some(gpt4o), "{name}");
        }
        assert_eq!(
            p.price("gpt-4o-mini-2024-07-18"),
            p.price("gpt-4o-mini"),
            "the longer model wins"
        );
        assert_ne!(p.price("gpt-4o-mini"), Some(gpt4o));
        let sonnet = p.price("claude-3-5-sonnet").expect("sonnet");
        for name in [
            "claude-3-5-sonnet-20241022",
            "claude-3.5-sonnet",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "claude-3-5-sonnet@20240620",
            "claude-3-5-sonnet-latest",
        ] {
            assert_eq!(p.price(name), Some(sonnet), "{name}");
        }
        assert!(p.price("gpt-4.1-mini-2025-04-14").is_some());
        assert!(p.price("gemini-1.5-pro-002").is_some());
        assert!(p.price("meta-llama/Llama-3.1-70B-Instruct").is_some());
        assert!(p.price("command-r-plus-08-2024").is_some());
        assert_eq!(p.price("my-own-model"), None);
        assert_eq!(p.price("gpt"), None);
    }

    #[test]
    fn costs_are_tokens_times_price_per_million() {
        let p = table();
        let cost = p.cost("gpt-4o", 1_000, 500).expect("known");
        assert!((cost - (1_000.0 * 2.5 + 500.0 * 10.0) / 1e6).abs() < 1e-12);
        assert_eq!(p.cost("unknown", 10, 10), None);
    }

    #[test]
    fn configuration_overrides_and_extends_the_table() {
        let mut config = BTreeMap::new();
        config.insert(
            "gpt-4o".to_string(),
            PriceConfig {
                input: 1.0,
                output: 2.0,
                aliases: vec![],
            },
        );
        config.insert(
            "acme-llm".to_string(),
            PriceConfig {
                input: 0.5,
                output: 0.5,
                aliases: vec!["acme-llm-large".into()],
            },
        );
        let p = Pricing::new(&config);
        assert_eq!(
            p.price("gpt-4o-2024-08-06"),
            Some(Price {
                input: 1.0,
                output: 2.0
            })
        );
        assert!(p.price("acme-llm").is_some());
        assert_eq!(p.price("acme-llm-large"), p.price("acme-llm"));
    }
}
