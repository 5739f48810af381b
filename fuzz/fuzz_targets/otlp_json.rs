//! `POST /v1/otlp/traces` with `Content-Type: application/json` (the OTLP
//! JSON mapping): the body decoded and mapped onto traces as the endpoint does.
#![no_main]

use fuzz_support::map_and_check;
use libfuzzer_sys::fuzz_target;
use trulayer_server::otlp::{decode, Encoding};

fuzz_target!(|body: &[u8]| {
    if let Ok(request) = decode(body, Encoding::Json) {
        map_and_check(request);
    }
});
