//! The HTTP API. `router` lists every route and layer; each resource has its
//! own file; handlers take the `Principal` extractor and call the store.

mod extract;
mod health;
mod ingest;
mod otlp;
mod principal;
pub mod router;
mod traces;

use std::sync::Arc;

use crate::config::Config;
use crate::store::Store;

pub use principal::Principal;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub config: Arc<Config>,
}
