//! Python tools the tests drive (the SDK, OpenTelemetry, schemathesis),
//! installed from PyPI at pinned versions into virtual environments under
//! the target directory, so a fresh machine needs only `python3`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Tests of one binary run in parallel: one makes an environment while the
/// others wait for it, instead of clearing it under each other.
static MAKING: Mutex<()> = Mutex::new(());

/// The virtual environment `name` with `packages` installed; made on first
/// use and kept. A marker names what was installed, so a changed list
/// installs again. Returns the environment's directory (`bin/` holds its
/// `python` and the packages' commands).
pub fn venv(name: &str, packages: &[&str]) -> PathBuf {
    let _making = MAKING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let marker = venv.join(".installed");
    let wanted = packages.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|installed| installed == wanted) {
        return venv;
    }
    let status = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .expect("python3 is available");
    assert!(status.success(), "creating the virtual environment failed");
    let status = Command::new(venv.join("bin").join("python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(packages)
        .status()
        .expect("pip runs");
    assert!(status.success(), "installing {packages:?} failed");
    std::fs::write(&marker, wanted).expect("write marker");
    venv
}
