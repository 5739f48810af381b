//! The audit log. Entries are appended by the writer thread, which alone
//! knows the last hash of each tenant's chain, so the chain has no gaps
//! and no forks.

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::{now_micros, Result, Store};

/// One administrative action to record.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub tenant_id: i64,
    /// Who: `user:<email>`, `operator`, …
    pub actor: String,
    /// What: `auth.login`, `user.create`, `apikey.revoke`, …
    pub action: &'static str,
    /// On what: an id or an email.
    pub target: Option<String>,
    /// From where: the client's address.
    pub source: Option<String>,
    /// Anything else worth keeping, as a JSON object.
    pub details: serde_json::Value,
}

/// A stored entry.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub source: Option<String>,
    pub details: String,
}

/// Whether a tenant's chain is intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerdict {
    pub entries: i64,
    /// The first entry whose hash does not follow from what precedes it.
    pub broken_at: Option<i64>,
}

impl Store {
    pub async fn audit(&self, entry: AuditEntry) -> Result<()> {
        self.write(move |conn| append(conn, &entry)).await
    }

    /// Entries newest first, before entry `before` when paging.
    pub async fn audit_page(
        &self,
        tenant_id: i64,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, at, actor, action, target, source, details FROM audit_log \
                 WHERE tenant_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = stmt
                .query_map(
                    params![tenant_id, before.unwrap_or(i64::MAX), limit as i64],
                    |r| {
                        Ok(AuditRecord {
                            id: r.get(0)?,
                            at: r.get(1)?,
                            actor: r.get(2)?,
                            action: r.get(3)?,
                            target: r.get(4)?,
                            source: r.get(5)?,
                            details: r.get(6)?,
                        })
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// Recomputes the tenant's chain from its first entry.
    pub async fn verify_audit(&self, tenant_id: i64) -> Result<AuditVerdict> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, at, actor, action, target, source, details, prev_hash, hash \
                 FROM audit_log WHERE tenant_id = ?1 ORDER BY id",
            )?;
            let mut rows = stmt.query([tenant_id])?;
            let mut expected_prev = vec![0u8; 32];
            let mut entries = 0;
            while let Some(r) = rows.next()? {
                entries += 1;
                let id: i64 = r.get(0)?;
                let prev: Vec<u8> = r.get(7)?;
                let stored: Vec<u8> = r.get(8)?;
                let computed = entry_hash(
                    &prev,
                    tenant_id,
                    r.get(1)?,
                    &r.get::<_, String>(2)?,
                    &r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?.as_deref(),
                    r.get::<_, Option<String>>(5)?.as_deref(),
                    &r.get::<_, String>(6)?,
                );
                if prev != expected_prev || stored != computed {
                    return Ok(AuditVerdict {
                        entries,
                        broken_at: Some(id),
                    });
                }
                expected_prev = stored;
            }
            Ok(AuditVerdict {
                entries,
                broken_at: None,
            })
        })
        .await
    }
}

fn append(conn: &Connection, e: &AuditEntry) -> Result<()> {
    let prev: Vec<u8> = conn
        .prepare_cached("SELECT hash FROM audit_log WHERE tenant_id = ?1 ORDER BY id DESC LIMIT 1")?
        .query_row([e.tenant_id], |r| r.get(0))
        .optional()?
        .unwrap_or_else(|| vec![0u8; 32]);
    let at = now_micros();
    let details = e.details.to_string();
    let hash = entry_hash(
        &prev,
        e.tenant_id,
        at,
        &e.actor,
        e.action,
        e.target.as_deref(),
        e.source.as_deref(),
        &details,
    );
    conn.prepare_cached(
        "INSERT INTO audit_log (tenant_id, at, actor, action, target, source, details, \
         prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        e.tenant_id,
        at,
        e.actor,
        e.action,
        e.target,
        e.source,
        details,
        prev,
        &hash[..]
    ])?;
    Ok(())
}

/// SHA-256 over the previous hash and every field, each length-prefixed so
/// no two different entries serialize alike.
#[allow(clippy::too_many_arguments)]
fn entry_hash(
    prev: &[u8],
    tenant_id: i64,
    at: i64,
    actor: &str,
    action: &str,
    target: Option<&str>,
    source: Option<&str>,
    details: &str,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(tenant_id.to_be_bytes());
    h.update(at.to_be_bytes());
    for field in [Some(actor), Some(action), target, source, Some(details)] {
        match field {
            None => h.update([0u8]),
            Some(text) => {
                h.update([1u8]);
                h.update((text.len() as u64).to_be_bytes());
                h.update(text.as_bytes());
            }
        }
    }
    h.finalize().into()
}
