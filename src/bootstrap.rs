//! First start: an empty data directory gets an organisation, a project, an
//! owner login and an API key. What `[init]` fixes is used as given; what it
//! leaves out is generated and written to a 0600 file, and printed once to
//! stderr when that is a terminal. Elsewhere stderr is kept where others may
//! read it (systemd's journal, a log file), so only the file's path is.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::auth;
use crate::config::Config;
use crate::store::{BootstrapResult, NewOrg, Store};

/// The file, inside the data directory, holding generated first credentials.
pub const CREDENTIALS_FILE: &str = "initial-credentials";
const DEFAULT_ADMIN_EMAIL: &str = "admin@localhost";

/// What the first start created; secrets appear only if they were generated.
#[derive(Debug, Clone)]
pub struct InitialCredentials {
    pub org: String,
    pub project: String,
    pub admin_email: String,
    pub generated_password: Option<String>,
    pub generated_api_key: Option<String>,
    pub file: Option<PathBuf>,
}

/// Initialises an empty store; returns `None` when it was initialised before.
pub async fn first_start(
    store: &Store,
    config: &Config,
) -> anyhow::Result<Option<InitialCredentials>> {
    if store.is_initialised().await? {
        return Ok(None);
    }
    let init = &config.init;
    let chosen_key = init.api_key()?;
    let chosen_password = init.admin_password()?;
    let api_key = chosen_key.clone().unwrap_or_else(auth::generate_api_key);
    let password = chosen_password
        .clone()
        .unwrap_or_else(auth::generate_password);
    let password_hash =
        tokio::task::spawn_blocking(move || auth::hash_password(&password).map(|h| (h, password)))
            .await
            .context("hashing the owner password")?
            .map_err(|e| anyhow::anyhow!("hashing the owner password: {e}"))?;
    let (password_hash, password) = password_hash;
    let mut credentials = InitialCredentials {
        org: init.org.clone().unwrap_or_else(|| "default".into()),
        project: init.project.clone().unwrap_or_else(|| "default".into()),
        admin_email: init
            .admin_email
            .clone()
            .unwrap_or_else(|| DEFAULT_ADMIN_EMAIL.into()),
        generated_password: chosen_password.is_none().then_some(password),
        generated_api_key: chosen_key.is_none().then(|| api_key.clone()),
        file: None,
    };
    // Written before the commit, so a crash cannot leave an instance whose
    // generated secrets nobody ever saw.
    let generated =
        credentials.generated_password.is_some() || credentials.generated_api_key.is_some();
    if generated {
        let path = config.storage.data_dir.join(CREDENTIALS_FILE);
        write_private(&path, &credentials_text(&credentials))
            .with_context(|| format!("writing {}", path.display()))?;
        credentials.file = Some(path);
    }
    let result = store
        .bootstrap(NewOrg {
            org: credentials.org.clone(),
            project: credentials.project.clone(),
            admin_email: credentials.admin_email.clone(),
            password_hash,
            key_prefix: auth::visible_prefix(&api_key).to_string(),
            key_hash: auth::hash_api_key(&api_key),
            plan: config
                .init
                .plan
                .unwrap_or(crate::config::Plan::Enterprise)
                .as_str()
                .to_owned(),
        })
        .await?;
    match result {
        BootstrapResult::Created { .. } => {
            if let Some(path) = &credentials.file {
                if std::io::stderr().is_terminal() {
                    eprintln!("{}", credentials_text(&credentials));
                } else {
                    eprintln!("{}", credentials_notice(&credentials, path));
                }
            }
            Ok(Some(credentials))
        }
        BootstrapResult::AlreadyInitialised => {
            if let Some(path) = &credentials.file {
                let _ = std::fs::remove_file(path);
            }
            Ok(None)
        }
    }
}

fn credentials_text(c: &InitialCredentials) -> String {
    let mut text = format!(
        "# TruLayer Server first-start credentials. Shown once; store them safely, then delete this file.\n\
         organisation = {:?}\nproject = {:?}\nadmin_email = {:?}\n",
        c.org, c.project, c.admin_email
    );
    if let Some(p) = &c.generated_password {
        text.push_str(&format!("admin_password = {p:?}\n"));
    }
    if let Some(k) = &c.generated_api_key {
        text.push_str(&format!("api_key = {k:?}\n"));
    }
    text
}

fn credentials_notice(c: &InitialCredentials, path: &Path) -> String {
    let mut generated = Vec::new();
    if c.generated_password.is_some() {
        generated.push(format!("the password of {}", c.admin_email));
    }
    if c.generated_api_key.is_some() {
        generated.push("an API key".to_owned());
    }
    let verb = if generated.len() > 1 { "were" } else { "was" };
    format!(
        "First start: {} {verb} generated and written to {} (readable by this account \
         only; not shown here). Store them safely, then delete the file.",
        generated.join(" and "),
        // The operator reads this elsewhere (the journal), not where the
        // server was started.
        std::path::absolute(path)
            .as_deref()
            .unwrap_or(path)
            .display()
    )
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
