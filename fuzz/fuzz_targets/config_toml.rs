//! The config loader: a config file's text over the embedded defaults,
//! extracted and validated as `Config::load` does, and what the server then
//! builds from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trulayer_server::config::Config;
use trulayer_server::pricing::Pricing;

fuzz_target!(|text: &[u8]| {
    // The loader reads the file as UTF-8 text; other bytes are refused there.
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    match Config::from_toml_str(text) {
        Ok(config) => {
            assert!(config.validate().is_ok());
            let pricing = Pricing::new(&config.pricing);
            // A configured price applies to its model and its aliases.
            for (model, price) in &config.pricing {
                for name in std::iter::once(model).chain(&price.aliases) {
                    let cost = pricing.cost(name, 1_000_000, 1_000_000);
                    assert!(
                        cost.is_some_and(|c| c.is_finite() && c >= 0.0),
                        "{name:?}: {cost:?}"
                    );
                }
            }
        }
        // The message an operator reads must be writable, whatever the text.
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
