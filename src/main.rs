//! The `trulayer-server` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use trulayer_server::admin::AdminCommand;
use trulayer_server::config::{Config, DEFAULT_TOML};

/// jemalloc, whose background thread gives the memory a burst of large
/// requests freed back to the operating system within seconds; glibc's
/// malloc keeps most of it for good (see BENCHMARKS.md, memory).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Apply a changed configuration to a running server (what `systemctl
    /// reload` runs).
    ///
    /// Checks the file as check-config does, and reads the TLS certificate
    /// and key it names as the server will, then sends SIGHUP to --pid; the
    /// server applies the certificate and key and log.level, and logs
    /// `reloaded` with what it applied. A file the server would refuse is
    /// not sent (exit 2, or 1 for an unusable certificate), so the server
    /// keeps its configuration. Returns once the signal is sent.
    Reload {
        /// TOML configuration file: the one the server was started with.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The server's process id ($MAINPID in a systemd unit).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
        pid: i32,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Write a consistent copy of the database to a new file, also while
    /// the server runs and ingests; prints one JSON line.
    Backup {
        /// TOML configuration file (for the data directory).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The file to write; it must not exist.
        #[arg(long)]
        out: PathBuf,
    },
    /// Replace the database with a backup (the server must be stopped);
    /// the replaced database is kept under backups/ in the data directory.
    Restore {
        /// TOML configuration file (for the data directory).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The backup to restore.
        #[arg(long)]
        from: PathBuf,
    },
    /// Bring the database's schema up to this binary's (the server does
    /// this at start too); with --dry-run, list what would run.
    Migrate {
        /// TOML configuration file (for the data directory).
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        dry_run: bool,
    },
    /// Ask the running server whether it is ready (GET /ready): exit 0 when
    /// it is, 1 when not or unreachable.
    Healthcheck {
        /// TOML configuration file (for the address).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// TLS helpers.
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Operator commands on the data directory (also while the server
    /// runs); each prints one JSON line.
    Admin {
        /// TOML configuration file (for the data directory).
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Write a self-signed certificate and key (cert.pem, key.pem) for
    /// evaluation; clients must be told to trust it.
    SelfSigned {
        /// Directory to write them to.
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Host names and IP addresses the certificate is for.
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        hosts: Vec<String>,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
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
        Command::Reload { config, pid } => {
            match Config::load(config.as_deref()) {
                Ok(c) => report(
                    "trulayer-server reload",
                    trulayer_server::ops::signal_reload(&c, pid),
                ),
                Err(e) => {
                    eprintln!("{e}\ntrulayer-server reload: not reloaded; the server keeps its configuration");
                    ExitCode::from(2)
                }
            }
        }
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{DEFAULT_TOML}");
            ExitCode::SUCCESS
        }
        Command::Admin { config, command } => admin(config, command),
        Command::Backup { config, out } => with_config("trulayer-server", config, |c| {
            trulayer_server::ops::backup(&c.storage.data_dir, &out)
        }),
        Command::Restore { config, from } => with_config("trulayer-server", config, |c| {
            trulayer_server::ops::restore(&c.storage.data_dir, &from)
        }),
        Command::Migrate { config, dry_run } => with_config("trulayer-server", config, |c| {
            if dry_run {
                return trulayer_server::ops::migration_plan(&c.storage.data_dir);
            }
            let _lock = trulayer_server::ops::DataLock::acquire(&c.storage.data_dir)?;
            let before = trulayer_server::ops::migration_plan(&c.storage.data_dir)?;
            let store =
                trulayer_server::store::Store::open(&c.storage.data_dir, c.storage.synchronous, 1)?;
            store.close();
            Ok(serde_json::json!({
                "applied": before["pending"],
                "schema_version": store.schema_version(),
            }))
        }),
        Command::Healthcheck { config } => healthcheck(config),
        Command::Tls {
            command:
                TlsCommand::SelfSigned {
                    out_dir,
                    hosts,
                    days,
                },
        } => report(
            "trulayer-server tls self-signed",
            trulayer_server::ops::self_signed_certificate(&out_dir, &hosts, days),
        ),
    }
}

/// Loads the configuration and runs `f`, printing its JSON line: exit 0,
/// or the error (after `label`) and exit 1; 2 for a bad configuration.
fn with_config(
    label: &str,
    config: Option<PathBuf>,
    f: impl FnOnce(&Config) -> anyhow::Result<serde_json::Value>,
) -> ExitCode {
    let config = match Config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    report(label, f(&config))
}

/// Prints a command's JSON line (exit 0) or its error after `label` (exit 1).
fn report(label: &str, result: anyhow::Result<serde_json::Value>) -> ExitCode {
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{label}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `work` to completion on a single-threaded runtime.
fn block_on<T>(work: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?
        .block_on(work)
}

fn healthcheck(config: Option<PathBuf>) -> ExitCode {
    with_config("trulayer-server healthcheck", config, |c| {
        match block_on(trulayer_server::ops::healthcheck(c))? {
            (200, body) => Ok(body),
            (status, body) => anyhow::bail!("not ready (HTTP {status}): {body}"),
        }
    })
}

fn admin(config_path: Option<PathBuf>, command: AdminCommand) -> ExitCode {
    with_config("trulayer-server admin", config_path, |c| {
        block_on(trulayer_server::admin::run(c, command))
    })
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
        .on_thread_start(trulayer_server::priority::lower_this_thread)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(trulayer_server::server::run_service(config, config_path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("trulayer-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
