//! Building the page's wasm: `hearth-web` in the size-optimised `wasm-release` profile, wasm-bindgen into `www/pkg/`, then
//! `wasm-opt -Oz` when npm's binaryen is installed (never Debian's: its wasm-opt 108 emits
//! modules Chromium refuses). And Hydrogen's page, `www/hydrogen/`, from `clients/hydrogen/`.

use std::path::PathBuf;

use crate::{Error, Result, cmd, root, tools};

/// `www/pkg/`, the wasm-bindgen output the web host imports.
pub fn pkg_dir() -> PathBuf {
    root().join("www/pkg")
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// npm's wasm-opt, installed with the e2e test packages.
fn wasm_opt_bin() -> Option<PathBuf> {
    let p = root().join("tests/e2e/node_modules/.bin/wasm-opt");
    p.is_file().then_some(p)
}

/// Why the wasm cannot be built yet, if it cannot.
pub fn missing_prerequisite() -> Option<String> {
    let root = root();
    if !root.join("web/Cargo.toml").is_file() {
        return Some("web/ (crate hearth-web) does not exist yet".into());
    }
    if !root.join("www/hearth.js").is_file() {
        return Some("www/hearth.js (the web host) does not exist yet".into());
    }
    None
}

pub fn build_release() -> Result<()> {
    if let Some(why) = missing_prerequisite() {
        return Err(Error::Other(format!("cannot build the page: {why}")));
    }
    let root = root();
    cmd::run(&mut cmd::new(
        "cargo",
        &[
            "build",
            "-p",
            "hearth-web",
            "--target",
            tools::WASM_TARGET,
            // Size-optimised (opt-level "z", fat LTO): download and compile time dominate boot.
            "--profile",
            "wasm-release",
        ],
        &root,
    ))?;
    let wasm = target_dir()
        .join(tools::WASM_TARGET)
        .join("wasm-release/hearth_web.wasm");
    let out = pkg_dir();
    let mut bindgen = std::process::Command::new(tools::wasm_bindgen_bin());
    bindgen
        .args(["--target", "web", "--no-typescript", "--out-dir"])
        .arg(&out)
        .arg(&wasm)
        .current_dir(&root);
    cmd::run(&mut bindgen)?;
    let bg = out.join("hearth_web_bg.wasm");
    match wasm_opt_bin() {
        Some(opt) => {
            let tmp = out.join("hearth_web_bg.opt.wasm");
            let mut c = std::process::Command::new(opt);
            // The features rustc enables by default for wasm32-unknown-unknown.
            c.args([
                "-Oz",
                "--enable-bulk-memory",
                "--enable-nontrapping-float-to-int",
                "--enable-sign-ext",
                "--enable-mutable-globals",
                "--enable-reference-types",
                "--enable-multivalue",
            ])
            .arg(&bg)
            .arg("-o")
            .arg(&tmp);
            cmd::run(&mut c)?;
            std::fs::rename(&tmp, &bg)?;
        }
        None => println!(
            "xtask: wasm-opt not installed (npm ci in tests/e2e brings it); keeping the unoptimised wasm"
        ),
    }
    let size = std::fs::metadata(&bg)?.len();
    println!("xtask: built {} ({} KiB)", bg.display(), size / 1024);
    Ok(())
}

/// `clients/hydrogen/`: the npm package (hydrogen-view-sdk, pinned by its lock) and the app page.
fn hydrogen_dir() -> PathBuf {
    root().join("clients/hydrogen")
}

/// Builds Hydrogen's page into `www/hydrogen/` (`npm ci` there first if needed): the app bundled
/// with esbuild plus the SDK's and olm's assets, copied rather than committed.
pub fn build_hydrogen() -> Result<()> {
    let dir = hydrogen_dir();
    tools::ensure_npm_package(&dir)?;
    let mut node = cmd::new("node", &["build.mjs"], &dir);
    node.arg(root().join("www/hydrogen"));
    cmd::run(&mut node)
}
