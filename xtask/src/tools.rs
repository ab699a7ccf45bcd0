//! Installing what a fresh Debian machine with Rust lacks. Each step checks first, so a second
//! run installs nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result, cmd, root};

pub const WASM_TARGET: &str = "wasm32-unknown-unknown";
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The wasm target and a wasm-bindgen CLI matching the library version in Cargo.lock.
pub fn ensure_wasm_toolchain() -> Result<()> {
    ensure_wasm_target()?;
    ensure_wasm_bindgen()
}

pub fn ensure_wasm_target() -> Result<()> {
    let installed = cmd::output(&mut cmd::new(
        "rustup",
        &["target", "list", "--installed"],
        &root(),
    ));
    if installed.is_some_and(|list| list.lines().any(|l| l.trim() == WASM_TARGET)) {
        return Ok(());
    }
    cmd::run(&mut cmd::new(
        "rustup",
        &["target", "add", WASM_TARGET],
        &root(),
    ))
}

/// The version of `name` pinned in a Cargo.lock text (the first entry if several).
pub fn locked_version(lock: &str, name: &str) -> Option<String> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let next = lines.next()?.trim();
            return next
                .strip_prefix("version = \"")?
                .strip_suffix('"')
                .map(str::to_owned);
        }
    }
    None
}

/// Reads the version from `wasm-bindgen --version` output (`wasm-bindgen 0.2.100`).
pub fn cli_version(output: &str) -> Option<String> {
    output.split_whitespace().nth(1).map(str::to_owned)
}

/// The wasm-bindgen CLI: on PATH, or where `cargo install` puts it.
pub fn wasm_bindgen_bin() -> PathBuf {
    if cmd::on_path("wasm-bindgen") {
        return PathBuf::from("wasm-bindgen");
    }
    cargo_home().join("bin").join("wasm-bindgen")
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"))
}

pub fn ensure_wasm_bindgen() -> Result<()> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock"))?;
    let Some(wanted) = locked_version(&lock, "wasm-bindgen") else {
        return Err(Error::Other(
            "Cargo.lock pins no wasm-bindgen: is hearth-web in the workspace?".into(),
        ));
    };
    let have = cmd::output(Command::new(wasm_bindgen_bin()).arg("--version"))
        .and_then(|o| cli_version(&o));
    if have.as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    println!(
        "xtask: wasm-bindgen CLI is {}, Cargo.lock wants {wanted}",
        have.as_deref().unwrap_or("absent")
    );
    // Not `--locked`: the registry mirror lacks one of the CLI's pinned dependency versions.
    cmd::run(&mut cmd::new(
        "cargo",
        &["install", "wasm-bindgen-cli", "--version", &wanted],
        &root(),
    ))
}

/// Chromium and chromedriver from Debian, for the wasm browser tests and the e2e tests.
pub fn ensure_chromium() -> Result<()> {
    if Path::new(CHROMIUM).is_file() && Path::new(CHROMEDRIVER).is_file() {
        return Ok(());
    }
    apt_install(&["chromium", "chromium-driver"])
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let sudo = !is_root() && cmd::on_path("sudo");
    let mut update = if sudo {
        cmd::new("sudo", &["apt-get", "update"], &root())
    } else {
        cmd::new("apt-get", &["update"], &root())
    };
    cmd::run(&mut update)?;
    let mut args = vec!["apt-get", "install", "-y", "--no-install-recommends"];
    args.extend_from_slice(packages);
    let mut install = if sudo {
        cmd::new("sudo", &args, &root())
    } else {
        cmd::new(args[0], &args[1..], &root())
    };
    install.env("DEBIAN_FRONTEND", "noninteractive");
    cmd::run(&mut install)
}

fn is_root() -> bool {
    cmd::output(Command::new("id").arg("-u")).is_some_and(|o| o.trim() == "0")
}

/// Every npm package directory of the repository's tests and of the clients served beside the
/// page (those with a package-lock.json).
pub fn npm_package_dirs() -> Vec<PathBuf> {
    let mut found = Vec::new();
    collect_package_dirs(&root().join("tests"), 0, &mut found);
    collect_package_dirs(&root().join("clients"), 0, &mut found);
    found.sort();
    found
}

fn collect_package_dirs(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
    if depth > 3 {
        return;
    }
    if dir.join("package-lock.json").is_file() {
        found.push(dir.to_path_buf());
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let hidden_or_deps = name.to_string_lossy().starts_with('.') || name == "node_modules";
        if !hidden_or_deps && entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_package_dirs(&entry.path(), depth + 1, found);
        }
    }
}

/// `npm ci` in every package directory where node_modules is missing or older than the lock.
pub fn ensure_npm_packages() -> Result<()> {
    npm_package_dirs()
        .iter()
        .try_for_each(|dir| ensure_npm_package(dir))
}

/// `npm ci` in `dir` unless its node_modules is up to date with its package-lock.json.
pub fn ensure_npm_package(dir: &Path) -> Result<()> {
    if npm_up_to_date(dir) {
        return Ok(());
    }
    cmd::run(&mut cmd::new(
        "npm",
        &["ci", "--no-audit", "--no-fund", "--loglevel=error"],
        dir,
    ))
}

fn npm_up_to_date(dir: &Path) -> bool {
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(dir.join("package-lock.json")),
        modified(dir.join("node_modules/.package-lock.json")),
    ) {
        (Some(lock), Some(installed)) => installed >= lock,
        _ => false,
    }
}

/// The Python venv the interop runner uses for matrix-nio (same path as tests/interop/run.sh).
pub fn ensure_interop_venv() -> Result<()> {
    ensure_venv(&root().join("tests/interop/nio"), "import nio")
}

/// The venv of tests/interop/synapse/run.sh (matrix-synapse and matrix-nio, same path as the
/// runner's), and the openssl CLI that makes each Synapse's certificate.
pub fn ensure_synapse_venv() -> Result<()> {
    let dir = root().join("tests/interop/synapse");
    if !dir.join("requirements.txt").is_file() {
        return Ok(());
    }
    if !cmd::on_path("openssl") {
        apt_install(&["openssl"])?;
    }
    ensure_venv(&dir, "import synapse, nio, signedjson")
}

/// A venv in `dir/.venv` from `dir/requirements.txt`, unless one is there that passes `check`
/// (Python code) and was installed from the same requirements (a copy of them is kept in the
/// venv, so a changed pin reinstalls).
fn ensure_venv(dir: &Path, check: &str) -> Result<()> {
    let requirements = dir.join("requirements.txt");
    if !requirements.is_file() {
        return Ok(());
    }
    let installed = dir.join(".venv/requirements.installed");
    let wanted = std::fs::read(&requirements)?;
    let python = dir.join(".venv/bin/python");
    let same = std::fs::read(&installed).is_ok_and(|had| had == wanted);
    if same && cmd::output(&mut cmd::new(&python, &["-c", check], dir)).is_some() {
        return Ok(());
    }
    if cmd::output(&mut cmd::new("python3", &["-c", "import ensurepip"], dir)).is_none() {
        apt_install(&["python3-venv"])?;
    }
    cmd::run(&mut cmd::new("python3", &["-m", "venv", ".venv"], dir))?;
    cmd::run(&mut cmd::new(
        dir.join(".venv/bin/pip"),
        &[
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            "requirements.txt",
        ],
        dir,
    ))?;
    std::fs::write(installed, wanted)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"
[[package]]
name = "wasm-bindgen-backend"
version = "0.2.1"

[[package]]
name = "wasm-bindgen"
version = "0.2.130"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#;

    #[test]
    fn locked_version_reads_the_exact_package() {
        assert_eq!(
            locked_version(LOCK, "wasm-bindgen").as_deref(),
            Some("0.2.130")
        );
        assert_eq!(
            locked_version(LOCK, "wasm-bindgen-backend").as_deref(),
            Some("0.2.1")
        );
        assert_eq!(locked_version(LOCK, "serde"), None);
    }

    #[test]
    fn cli_version_reads_the_second_word() {
        assert_eq!(
            cli_version("wasm-bindgen 0.2.130\n").as_deref(),
            Some("0.2.130")
        );
        assert_eq!(cli_version(""), None);
    }
}
