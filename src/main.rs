//! The `trulayer-server` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use trulayer_server::admin::AdminCommand;
use trulayer_server::config::{Config, Plan, DEFAULT_TOML};

/// TruLayer Server: self-hosted LLM observability speaking the TruLayer v1 API.
#[derive(Parser)]
#[command(name = "trulayer-server", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (on the built-in defaults when no config is given).
    Serve {
        /// TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a configuration and exit: 0 when it is valid.
    CheckConfig {
        /// TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Operator commands on the data directory (also while the server
    /// runs); each prints one JSON line.
    Admin {
        /// TOML configuration file (for the data directory).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: AdminCli,
    },
}

#[derive(Subcommand)]
enum AdminCli {
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
        #[arg(long, default_value = "member")]
        role: String,
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

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the commented default configuration.
    Default,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { config } => match Config::load(config.as_deref()) {
            Ok(c) => {
                println!(
                    "configuration OK: listen {} ({}), data in {}",
                    c.server.listen,
                    if c.server.tls.is_some() {
                        "https"
                    } else {
                        "http"
                    },
                    c.storage.data_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{DEFAULT_TOML}");
            ExitCode::SUCCESS
        }
        Command::Admin { config, command } => admin(config, command),
    }
}

fn admin(config_path: Option<PathBuf>, command: AdminCli) -> ExitCode {
    let config = match Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let command = match command {
        AdminCli::CreateOrg {
            name,
            project,
            admin_email,
            admin_password,
            plan,
        } => AdminCommand::CreateOrg {
            name,
            project,
            admin_email,
            admin_password,
            plan,
        },
        AdminCli::CreateUser {
            org,
            email,
            password,
            role,
        } => AdminCommand::CreateUser {
            org,
            email,
            password,
            role,
        },
        AdminCli::ResetPassword { email, password } => {
            AdminCommand::ResetPassword { email, password }
        }
        AdminCli::CreateKey {
            org,
            project,
            name,
            scopes,
        } => AdminCommand::CreateKey {
            org,
            project,
            name,
            scopes,
        },
        AdminCli::SetPlan { org, plan } => AdminCommand::SetPlan { org, plan },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(trulayer_server::admin::run(&config, command)) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trulayer-server admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let config = match Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    trulayer_server::logging::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("trulayer-worker")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(trulayer_server::server::run_until(
        config,
        shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("trulayer-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
