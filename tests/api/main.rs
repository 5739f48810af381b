//! The v1 API against a real server on a real socket.

#[path = "../common/mod.rs"]
mod common;

mod access;
mod admin_cli;
mod audit;
mod basics;
mod ci_gate;
mod compression;
mod datasets;
mod dsr;
mod eval_keys;
mod evals;
mod export;
mod failure_rules;
mod failures;
mod feedback;
mod governance;
mod ingest;
mod ingestion_health;
mod isolation;
mod judges;
mod live;
mod logins;
mod memory;
mod metrics;
mod openapi;
mod page;
mod plans;
mod pricing;
mod retention;
mod search;
mod sessions;
mod telemetry;
mod tenancy;
mod traces;
mod webhooks;
