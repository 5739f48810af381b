//! TruLayer Server: a self-hosted appliance speaking the TruLayer v1 API for
//! LLM observability. `main.rs` is a thin CLI over this library.
#![forbid(unsafe_code)]

pub mod admin;
pub mod alerts;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod connections;
pub mod error;
pub mod eval;
pub mod failures;
pub mod http;
pub mod ingest;
pub mod logging;
pub mod model;
pub mod ops;
pub mod otlp;
pub mod pricing;
pub mod priority;
pub mod privacy;
pub mod secrets;
pub mod server;
pub mod sketch;
pub mod store;
pub mod systemd;
pub mod upkeep;
pub mod webhooks;
