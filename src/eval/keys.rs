//! Organisations' own judge keys (`/v1/settings/eval-keys`), opened for the
//! call that uses them: a judge or model endpoint of a provider sends the
//! organisation's key for that provider, when it has one, instead of the
//! configured key.

use std::sync::Arc;

use super::judge::{JudgeError, Provider};
use crate::secrets::SecretBox;
use crate::store::Store;

/// What a sealed key is bound to: its organisation and provider.
pub fn context(tenant_id: i64, provider: Provider) -> String {
    format!("eval-key/{tenant_id}/{}", provider.as_str())
}

/// Finds and opens organisations' keys.
#[derive(Clone)]
pub struct OwnKeys {
    store: Arc<Store>,
    sealer: Option<Arc<SecretBox>>,
}

impl OwnKeys {
    pub fn new(store: Arc<Store>, sealer: Option<Arc<SecretBox>>) -> OwnKeys {
        OwnKeys { store, sealer }
    }

    /// The organisation's key for `provider`; none when it has set none. A
    /// key that cannot be opened fails the call, saying why, rather than
    /// quietly using the configured key in its place.
    pub async fn key(
        &self,
        tenant_id: i64,
        provider: Provider,
    ) -> Result<Option<String>, JudgeError> {
        let sealed = self
            .store
            .sealed_eval_key(tenant_id, provider.as_str())
            .await
            .map_err(|e| JudgeError::Retryable {
                reason: format!(
                    "reading the organisation's {} key failed: {e}",
                    provider.as_str()
                ),
                retry_after: None,
            })?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let unusable = |why: String| {
            JudgeError::Failed(format!(
                "the organisation's own {} key cannot be used: {why}",
                provider.as_str()
            ))
        };
        let Some(sealer) = &self.sealer else {
            return Err(unusable(
                "the server has no [encryption] key to open it with".into(),
            ));
        };
        let plain = sealer
            .open(
                &sealed.sealed,
                &sealed.key_id,
                &context(tenant_id, provider),
            )
            .map_err(|e| unusable(e.to_string()))?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| unusable("it is not text".into()))
    }
}
