//! The audit log. Every audited change appends its entry with `record`, on
//! the connection and inside the transaction that makes the change, so the
//! two commit or roll back together: the log cannot lack a change that
//! happened, nor hold one that did not. The previous hash is read from the
//! table inside that transaction, so entries appended by several jobs of one
//! group commit, or by an operator command in another process (its own
//! `BEGIN IMMEDIATE`), chain in the order they were written: no gaps, no forks.

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::{now_micros, Result, Store};

/// Who makes a change, and from where: the author of its audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `user:<email>`, `key:<id>` or `operator`.
    pub name: String,
    /// The client's address, when the change came over the network.
    pub source: Option<String>,
}

impl Actor {
    /// Someone at the server's command line (`trulayer-server admin …`).
    pub fn operator() -> Actor {
        Actor {
            name: "operator".into(),
            source: None,
        }
    }

    /// The server itself, finishing work someone asked for earlier (a
    /// data subject request).
    pub fn server() -> Actor {
        Actor {
            name: "server".into(),
            source: None,
        }
    }

    pub fn user(email: &str, source: Option<String>) -> Actor {
        Actor {
            name: format!("user:{email}"),
            source,
        }
    }

    pub fn api_key(key_id: i64, source: Option<String>) -> Actor {
        Actor {
            name: format!("key:{key_id}"),
            source,
        }
    }
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
        self.read(move |conn| Ok(walk_chain(conn, tenant_id, i64::MAX)?.0))
            .await
    }

    /// The head of the chain of the tenant with public id `tenant_uuid` as
    /// of `until` (microseconds, exclusive), with the chain up to it
    /// recomputed; `None` for an unknown tenant or one without entries by
    /// then.
    pub async fn audit_anchor(
        &self,
        tenant_uuid: String,
        until: i64,
    ) -> Result<Option<AuditAnchor>> {
        self.read(move |conn| {
            let Some(tenant_id) = conn
                .prepare_cached("SELECT id FROM tenants WHERE uuid = ?1")?
                .query_row([&tenant_uuid], |r| r.get::<_, i64>(0))
                .optional()?
            else {
                return Ok(None);
            };
            let (verdict, head) = walk_chain(conn, tenant_id, until)?;
            Ok(head.map(|head_hash| AuditAnchor { head_hash, verdict }))
        })
        .await
    }
}

/// The head of a tenant's chain at a moment, and whether the chain up to it
/// is intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditAnchor {
    /// The stored hash of the last entry before the moment.
    pub head_hash: Vec<u8>,
    /// The entries up to it, and where they first fail to chain.
    pub verdict: AuditVerdict,
}

/// Walks the tenant's entries in order up to the first written at or after
/// `until`, recomputing each hash; returns the verdict and the last stored
/// hash (`None` without entries).
fn walk_chain(
    conn: &Connection,
    tenant_id: i64,
    until: i64,
) -> Result<(AuditVerdict, Option<Vec<u8>>)> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, actor, action, target, source, details, prev_hash, hash \
         FROM audit_log WHERE tenant_id = ?1 ORDER BY id",
    )?;
    let mut rows = stmt.query([tenant_id])?;
    let mut expected_prev = vec![0u8; 32];
    let mut entries = 0;
    let mut broken_at = None;
    let mut head = None;
    while let Some(r) = rows.next()? {
        let at: i64 = r.get(1)?;
        if at >= until {
            break;
        }
        entries += 1;
        let id: i64 = r.get(0)?;
        let prev: Vec<u8> = r.get(7)?;
        let stored: Vec<u8> = r.get(8)?;
        if broken_at.is_none() {
            let computed = entry_hash(
                &prev,
                tenant_id,
                at,
                &r.get::<_, String>(2)?,
                &r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?.as_deref(),
                r.get::<_, Option<String>>(5)?.as_deref(),
                &r.get::<_, String>(6)?,
            );
            if prev != expected_prev || stored != computed {
                broken_at = Some(id);
            }
        }
        expected_prev = stored.clone();
        head = Some(stored);
    }
    Ok((AuditVerdict { entries, broken_at }, head))
}

/// Appends what `by` did to the tenant's chain, on `conn`: the connection
/// (and so the transaction) of the change itself. Called after the change's
/// statements succeeded, so a refused change leaves no entry.
pub(super) fn record(
    conn: &Connection,
    tenant_id: i64,
    by: &Actor,
    action: &'static str,
    target: Option<&str>,
    details: serde_json::Value,
) -> Result<()> {
    let prev: Vec<u8> = conn
        .prepare_cached("SELECT hash FROM audit_log WHERE tenant_id = ?1 ORDER BY id DESC LIMIT 1")?
        .query_row([tenant_id], |r| r.get(0))
        .optional()?
        .unwrap_or_else(|| vec![0u8; 32]);
    let at = now_micros();
    let details = details.to_string();
    let source = by.source.as_deref();
    let hash = entry_hash(
        &prev, tenant_id, at, &by.name, action, target, source, &details,
    );
    conn.prepare_cached(
        "INSERT INTO audit_log (tenant_id, at, actor, action, target, source, details, \
         prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        tenant_id,
        at,
        by.name,
        action,
        target,
        source,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::NewApiKey;
    use super::*;
    use crate::config::Synchronous;

    /// A store on a real file, with one organisation (its `org.create`
    /// is the chain's first entry).
    async fn store_with_org() -> (tempfile::TempDir, Arc<Store>, i64) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(dir.path(), Synchronous::Normal, 2).expect("open"));
        let (tenant, _) = store
            .create_tenant("acme".into(), "default".into(), Actor::operator())
            .await
            .expect("tenant");
        (dir, store, tenant)
    }

    async fn close(store: Arc<Store>) {
        tokio::task::spawn_blocking(move || store.close())
            .await
            .expect("close");
    }

    /// Makes the audit log refuse entries whose details mention `marker`,
    /// from a second connection as anyone with the file could.
    fn refuse_entries_mentioning(dir: &tempfile::TempDir, marker: &str) {
        let conn = Connection::open(dir.path().join(super::super::DB_FILE)).expect("open");
        conn.execute_batch(&format!(
            "CREATE TRIGGER refuse_marked BEFORE INSERT ON audit_log \
             WHEN instr(NEW.details, '{marker}') > 0 \
             BEGIN SELECT RAISE(ABORT, 'the audit log refuses this entry'); END;"
        ))
        .expect("trigger");
    }

    async fn project_names(store: &Store, tenant: i64) -> Vec<String> {
        store
            .list_projects(tenant, true, None, 1000)
            .await
            .expect("projects")
            .into_iter()
            .map(|p| p.name)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_anchor_is_the_head_of_the_chain_as_of_its_moment() {
        let (dir, store, tenant) = store_with_org().await;
        for name in ["one", "two", "three"] {
            store
                .create_project(tenant, name.into(), Actor::operator())
                .await
                .expect("project");
        }
        let conn = Connection::open(dir.path().join(super::super::DB_FILE)).expect("open");
        let uuid: String = conn
            .query_row("SELECT uuid FROM tenants WHERE id = ?1", [tenant], |r| {
                r.get(0)
            })
            .expect("tenant uuid");
        let entries: Vec<(i64, Vec<u8>)> = conn
            .prepare("SELECT at, hash FROM audit_log WHERE tenant_id = ?1 ORDER BY id")
            .expect("prepare")
            .query_map([tenant], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("entries");
        assert_eq!(entries.len(), 4, "org.create and three projects");
        // As of the third entry's moment: the first two, headed by the second.
        let anchor = store
            .audit_anchor(uuid.clone(), entries[2].0)
            .await
            .expect("anchor")
            .expect("entries by then");
        assert_eq!(anchor.head_hash, entries[1].1);
        assert_eq!(
            anchor.verdict,
            AuditVerdict {
                entries: 2,
                broken_at: None
            }
        );
        let now = store
            .audit_anchor(uuid.clone(), i64::MAX)
            .await
            .expect("anchor")
            .expect("entries");
        assert_eq!(now.head_hash, entries[3].1);
        assert_eq!(now.verdict.entries, 4);
        // Before the first entry, and for an unknown tenant: none.
        assert_eq!(
            store
                .audit_anchor(uuid, entries[0].0)
                .await
                .expect("anchor"),
            None
        );
        assert_eq!(
            store
                .audit_anchor("00000000-0000-0000-0000-000000000000".into(), i64::MAX)
                .await
                .expect("anchor"),
            None
        );
        close(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_whose_entry_cannot_be_written_does_not_happen() {
        let (dir, store, tenant) = store_with_org().await;
        refuse_entries_mentioning(&dir, "doomed");

        let refused = store
            .create_project(tenant, "doomed".into(), Actor::operator())
            .await;
        assert!(refused.is_err(), "{refused:?}");
        let project = store
            .create_project(tenant, "kept".into(), Actor::operator())
            .await
            .expect("an entry that may be written");
        let key = NewApiKey {
            project_id: project.id,
            name: "doomed key".into(),
            prefix: "tl_doomed".into(),
            key_hash: [7; 32],
            expires_at: None,
            scopes: Vec::new(),
        };
        let refused = store.create_api_key(tenant, key, Actor::operator()).await;
        assert!(refused.is_err(), "{refused:?}");

        assert_eq!(project_names(&store, tenant).await, ["default", "kept"]);
        assert!(store
            .api_keys_by_prefix("tl_doomed".into())
            .await
            .expect("keys")
            .is_empty());
        let actions: Vec<String> = store
            .audit_page(tenant, None, 100)
            .await
            .expect("log")
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(actions, ["project.create", "org.create"]);
        assert_eq!(
            store.verify_audit(tenant).await.expect("verify"),
            AuditVerdict {
                entries: 2,
                broken_at: None
            }
        );
        close(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_of_one_group_commit_chain_in_order_and_a_failed_change_leaves_none() {
        const CHANGES: usize = 24;
        let (_dir, store, tenant) = store_with_org().await;
        let before = store.writer_stats();

        // Hold the writer so that every change below waits for the same group.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started, writer_held) = tokio::sync::oneshot::channel::<()>();
        let mut started = Some(started);
        let holder = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |_| {
                        if let Some(started) = started.take() {
                            let _ = started.send(());
                        }
                        let _ = released.recv();
                        Ok(())
                    })
                    .await
            })
        };
        writer_held.await.expect("the writer is held");

        let mut changes = Vec::new();
        for i in 0..CHANGES {
            let store = store.clone();
            // One of them repeats a name: it fails inside the group, which
            // then runs again with a savepoint per job.
            let name = if i == CHANGES / 2 {
                "p0".to_string()
            } else {
                format!("p{i}")
            };
            changes.push(tokio::spawn(async move {
                let by = Actor::user(&format!("u{i}@example.com"), Some("127.0.0.1".into()));
                store.create_project(tenant, name, by).await
            }));
        }
        for _ in 0..2000 {
            if store.writer_stats().queued as usize == CHANGES {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(store.writer_stats().queued as usize, CHANGES);
        drop(release);
        holder.await.expect("task").expect("holder");
        let mut failed = 0;
        for change in changes {
            if change.await.expect("task").is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 1, "only the repeated name is refused");

        let after = store.writer_stats();
        assert!(
            after.groups - before.groups < CHANGES as u64,
            "changes shared transactions: {} groups for {} changes",
            after.groups - before.groups,
            CHANGES + 1
        );
        assert!(after.retried_groups > before.retried_groups);
        let verdict = store.verify_audit(tenant).await.expect("verify");
        assert_eq!(
            verdict,
            AuditVerdict {
                entries: CHANGES as i64,
                broken_at: None
            },
            "the org's entry and one per project made"
        );
        let logged: Vec<String> = store
            .audit_page(tenant, None, 100)
            .await
            .expect("log")
            .into_iter()
            .filter(|e| e.action == "project.create")
            .map(|e| e.details)
            .collect();
        let mut made = project_names(&store, tenant).await;
        made.retain(|n| n != "default");
        assert_eq!(logged.len(), made.len());
        for name in made {
            let details = json_name(&name);
            assert!(logged.contains(&details), "{name} has no entry");
        }
        close(store).await;
    }

    fn json_name(name: &str) -> String {
        serde_json::json!({ "name": name }).to_string()
    }
}
