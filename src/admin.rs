//! Operator commands for air-gapped automation: `trulayer-server admin …`.
//! They work on the data directory directly, also while the server runs
//! (SQLite lets a second process write; each command is a short
//! transaction), print one JSON line, and are recorded in the audit log with
//! the actor `operator`, in the same transaction as the change they make.

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use crate::auth::{self, Email, Password, Role};
use crate::config::{Config, Plan};
use crate::store::{Actor, NewApiKey, NewOrg, Store};

/// What an operator can do: the subcommands of `trulayer-server admin`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Create an organisation with a project, an owner and an API key.
    CreateOrg {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "default")]
        project: String,
        #[arg(long)]
        admin_email: String,
        #[arg(long)]
        admin_password: String,
        /// starter, pro or enterprise.
        #[arg(long, default_value = "enterprise", value_parser = parse_plan)]
        plan: Plan,
    },
    /// Add a user to an organisation (by id or name).
    CreateUser {
        #[arg(long)]
        org: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        /// owner, member or viewer.
        #[arg(long, default_value_t = Role::Member)]
        role: Role,
    },
    /// Set a user's password; their sessions end.
    ResetPassword {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
    },
    /// Create an API key for an organisation (and one of its projects).
    CreateKey {
        #[arg(long)]
        org: String,
        #[arg(long)]
        project: Option<String>,
        #[arg(long, default_value = "operator key")]
        name: String,
        /// Comma-separated: query, ingest. None: full access.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// Put an organisation on a plan.
    SetPlan {
        #[arg(long)]
        org: String,
        #[arg(long, value_parser = parse_plan)]
        plan: Plan,
    },
}

fn parse_plan(name: &str) -> Result<Plan, String> {
    Plan::parse(name).ok_or_else(|| "must be starter, pro or enterprise".into())
}

/// Runs `command` against the configured data directory.
pub async fn run(config: &Config, command: AdminCommand) -> anyhow::Result<Value> {
    let store = Store::open(&config.storage.data_dir, config.storage.synchronous, 1)
        .with_context(|| format!("opening {}", config.storage.data_dir.display()))?;
    let result = execute(&store, command).await;
    tokio::task::spawn_blocking(move || store.close())
        .await
        .context("closing the store")?;
    result
}

async fn execute(store: &Store, command: AdminCommand) -> anyhow::Result<Value> {
    match command {
        AdminCommand::CreateOrg {
            name,
            project,
            admin_email,
            admin_password,
            plan,
        } => {
            let email = checked_email(&admin_email)?;
            let password_hash = password_hash(admin_password).await?;
            let key = auth::generate_api_key();
            // One transaction: a taken email leaves no half-made organisation.
            let (org_id, project_id) = store
                .create_org(
                    NewOrg {
                        org: name,
                        project,
                        admin_email: email,
                        password_hash,
                        key_prefix: auth::visible_prefix(&key).to_owned(),
                        key_hash: auth::hash_api_key(&key),
                        plan: plan.as_str().into(),
                    },
                    Actor::operator(),
                )
                .await?;
            Ok(json!({"org_id": org_id, "project_id": project_id, "api_key": key}))
        }
        AdminCommand::CreateUser {
            org,
            email,
            password,
            role,
        } => {
            let (tenant_id, org_id, _) = tenant(store, &org).await?;
            let email = checked_email(&email)?;
            let hash = password_hash(password).await?;
            let user = store
                .create_user(tenant_id, email, hash, role, Actor::operator())
                .await?;
            Ok(
                json!({"user_id": user.uuid, "org_id": org_id, "email": user.email, "role": user.role}),
            )
        }
        AdminCommand::ResetPassword { email, password } => {
            let email = checked_email(&email)?;
            let user = store
                .user_for_login(email.clone())
                .await?
                .ok_or_else(|| anyhow!("no user with email {email}"))?
                .user;
            let hash = password_hash(password).await?;
            store
                .reset_user_password(user.tenant_id, user.uuid.clone(), hash, Actor::operator())
                .await?
                .ok_or_else(|| anyhow!("no user with email {email}"))?;
            Ok(json!({"user_id": user.uuid, "sessions_revoked": true}))
        }
        AdminCommand::CreateKey {
            org,
            project,
            name,
            scopes,
        } => {
            let (tenant_id, _, _) = tenant(store, &org).await?;
            if let Some(bad) = scopes
                .iter()
                .find(|s| !["query", "ingest"].contains(&s.as_str()))
            {
                bail!("--scopes: {bad:?} is not query or ingest");
            }
            let project = match project {
                Some(reference) => store
                    .find_project(tenant_id, reference.clone())
                    .await?
                    .ok_or_else(|| anyhow!("no project {reference:?} in that organisation"))?,
                None => store
                    .default_project(tenant_id)
                    .await?
                    .ok_or_else(|| anyhow!("the organisation has no project"))?,
            };
            let key = auth::generate_api_key();
            let id = store
                .create_api_key(
                    tenant_id,
                    new_key(&key, project.id, &name, scopes),
                    Actor::operator(),
                )
                .await?;
            let info = store
                .api_key_info(tenant_id, id)
                .await?
                .ok_or_else(|| anyhow!("the new key vanished"))?;
            Ok(
                json!({"key_id": info.uuid, "api_key": key, "project_id": project.uuid, "scopes": info.scopes}),
            )
        }
        AdminCommand::SetPlan { org, plan } => {
            let (tenant_id, org_id, _) = tenant(store, &org).await?;
            if !store
                .set_plan(tenant_id, plan.as_str().into(), Actor::operator())
                .await?
            {
                bail!("the organisation {org:?} vanished");
            }
            Ok(json!({"org_id": org_id, "plan": plan.as_str()}))
        }
    }
}

async fn tenant(store: &Store, reference: &str) -> anyhow::Result<(i64, String, String)> {
    store
        .find_tenant(reference.to_owned())
        .await?
        .ok_or_else(|| anyhow!("no organisation with id or name {reference:?}"))
}

fn checked_email(email: &str) -> anyhow::Result<String> {
    Email::parse(email)
        .map(Email::into_string)
        .map_err(|why| anyhow!("{email:?}: {why}"))
}

async fn password_hash(password: String) -> anyhow::Result<String> {
    Password::parse(password)
        .map_err(|why| anyhow!("the password {why}"))?
        .hash()
        .await
        .map_err(|e| anyhow!(e))
}

fn new_key(key: &str, project_id: i64, name: &str, scopes: Vec<String>) -> NewApiKey {
    NewApiKey {
        project_id,
        name: name.to_owned(),
        prefix: auth::visible_prefix(key).to_owned(),
        key_hash: auth::hash_api_key(key),
        expires_at: None,
        scopes,
    }
}
