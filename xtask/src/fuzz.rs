//! The coverage-guided fuzzer (`fuzz/`): `cargo xtask fuzz --minutes N` for a long run that
//! keeps what it learns, and the short bounded run of the CI stage `fuzz`.
//!
//! The harness is the stable crate `hearth-fuzz`; libFuzzer drives it through the thin target
//! in `fuzz/libfuzzer/`, built with `cargo +nightly fuzz`. Nightly is used for nothing else.

use std::path::{Path, PathBuf};

use crate::{Error, Result, cmd, root};

/// The cargo-fuzz release the project is known to work with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const TARGET: &str = "requests";
/// Longest input libFuzzer makes: ~48 steps, and a corpus that stays small.
const MAX_LEN: &str = "-max_len=2048";
/// An input running longer than this is a hang: a finding.
const TIMEOUT: &str = "-timeout=20";

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

fn project_dir() -> PathBuf {
    fuzz_dir().join("libfuzzer")
}

/// The corpus kept in the repository (minimised).
pub fn corpus_dir() -> PathBuf {
    fuzz_dir().join("corpus").join(TARGET)
}

pub fn regressions_dir() -> PathBuf {
    fuzz_dir().join("regressions")
}

/// Work directories, under the fuzz project's own (ignored) target directory.
fn work_dir(name: &str) -> PathBuf {
    project_dir().join("target").join(name)
}

/// The nightly toolchain (minimal profile) and cargo-fuzz, installed when missing.
pub fn ensure_toolchain() -> Result<()> {
    let toolchains = cmd::output(&mut cmd::new("rustup", &["toolchain", "list"], &root()));
    if !toolchains.is_some_and(|t| t.lines().any(|l| l.starts_with("nightly"))) {
        cmd::run(&mut cmd::new(
            "rustup",
            &["toolchain", "install", "nightly", "--profile", "minimal"],
            &root(),
        ))?;
    }
    let version = cmd::output(&mut cmd::new("cargo", &["fuzz", "--version"], &root()));
    if !version.is_some_and(|v| v.contains(CARGO_FUZZ_VERSION)) {
        cmd::run(&mut cmd::new(
            "cargo",
            &["install", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION],
            &root(),
        ))?;
    }
    Ok(())
}

/// `cargo +nightly fuzz <sub> ...` with the build settings every run shares, so that the CI
/// stage and a long run reuse one build: no sanitizer (the code under test is safe Rust;
/// AddressSanitizer would double the build and halve the speed), 16 codegen units (a faster
/// build for a slightly slower binary), debug assertions and overflow checks on.
fn cargo_fuzz(sub: &str) -> std::process::Command {
    let project = project_dir();
    let mut c = cmd::new(
        "cargo",
        &[
            "+nightly",
            "fuzz",
            sub,
            "--fuzz-dir",
            &project.to_string_lossy(),
            "--sanitizer",
            "none",
            "--codegen-units",
            "16",
            TARGET,
        ],
        &root(),
    );
    // The project's stable target directory must not leak into the nightly build.
    c.env_remove("CARGO_TARGET_DIR");
    c
}

pub fn build() -> Result<()> {
    cmd::run(&mut cargo_fuzz("build"))
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// The CI run: `seconds` of fuzzing from the kept corpus, failing on the first crash. New
/// inputs go to a scratch directory, so the repository is left as it was.
pub fn short_run(seconds: u64) -> Result<()> {
    build()?;
    let scratch = work_dir("ci-corpus");
    let artifacts = work_dir("ci-artifacts");
    fresh_dir(&scratch)?;
    fresh_dir(&artifacts)?;
    let mut c = cargo_fuzz("run");
    c.arg(&scratch).arg(corpus_dir()).args([
        "--",
        &format!("-max_total_time={seconds}"),
        MAX_LEN,
        TIMEOUT,
        &format!("-artifact_prefix={}/", artifacts.display()),
        "-print_final_stats=1",
    ]);
    cmd::run(&mut c).map_err(|e| {
        Error::Other(format!(
            "{e}\nthe fuzzer found a failure: its input is in {} (replay it with \
             `cargo run -p hearth-fuzz --bin fuzz-replay -- FILE`, or keep it with \
             `cargo xtask fuzz --minutes N`, which saves failures to fuzz/regressions/)",
            artifacts.display()
        ))
    })
}

/// `cargo xtask fuzz [--minutes N]`.
pub fn fuzz(args: &[String]) -> Result<()> {
    let mut minutes: u64 = 10;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minutes" => {
                minutes = it
                    .next()
                    .and_then(|m| m.parse().ok())
                    .ok_or_else(|| Error::Other("--minutes needs a whole number".into()))?;
            }
            other => return Err(Error::Other(format!("unknown fuzz option {other:?}"))),
        }
    }
    ensure_toolchain()?;
    long_run(minutes)
}

/// A long run in fork mode, which keeps going after a failure: every new input joins a work
/// corpus, every failure is kept. At the end the work corpus is merged into the kept one
/// (only inputs that add coverage stay) and each failure is copied into `fuzz/regressions/`
/// with its replayed report beside it.
fn long_run(minutes: u64) -> Result<()> {
    build()?;
    let work = work_dir("corpus");
    let artifacts = work_dir("artifacts");
    std::fs::create_dir_all(&work)?;
    fresh_dir(&artifacts)?;
    let mut c = cargo_fuzz("run");
    c.arg(&work).arg(corpus_dir()).args([
        "--",
        &format!("-max_total_time={}", minutes * 60),
        MAX_LEN,
        TIMEOUT,
        &format!("-artifact_prefix={}/", artifacts.display()),
        "-fork=1",
        "-ignore_crashes=1",
        "-ignore_timeouts=1",
        "-ignore_ooms=1",
        "-print_final_stats=1",
    ]);
    // Fork mode exits non-zero when any job crashed; the artifacts say what happened.
    if let Err(e) = cmd::run(&mut c) {
        println!("xtask: the fuzzer reported failures ({e})");
    }
    merge_corpus(&work)?;
    let saved = save_failures(&artifacts)?;
    println!(
        "xtask: corpus {} inputs, {} KB; {} new failure(s) saved to {}",
        count(&corpus_dir()),
        dir_size(&corpus_dir()) / 1024,
        saved.len(),
        regressions_dir().display()
    );
    for s in &saved {
        println!("  {}", s.display());
    }
    Ok(())
}

/// Replaces the kept corpus with the minimal set of kept and new inputs that covers what all
/// of them cover.
fn merge_corpus(work: &Path) -> Result<()> {
    let merged = work_dir("corpus-merged");
    fresh_dir(&merged)?;
    let mut c = cargo_fuzz("run");
    c.arg(&merged)
        .arg(corpus_dir())
        .arg(work)
        // Set cover over edges (no hit counters): a few hundred inputs instead of a thousand,
        // so the corpus stays small in the repository and quick to replay in `cargo test`.
        .args([
            "--",
            "-set_cover_merge=1",
            "-use_counters=0",
            MAX_LEN,
            TIMEOUT,
        ]);
    cmd::run(&mut c)?;
    let kept = corpus_dir();
    fresh_dir(&kept)?;
    for entry in std::fs::read_dir(&merged)? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, kept.join(name))?;
        }
    }
    Ok(())
}

/// Copies every crash, timeout and OOM input into `fuzz/regressions/`, with the harness's
/// report of it in a `.txt` beside it.
fn save_failures(artifacts: &Path) -> Result<Vec<PathBuf>> {
    let dir = regressions_dir();
    std::fs::create_dir_all(&dir)?;
    let mut saved = Vec::new();
    for entry in std::fs::read_dir(artifacts)? {
        let path = entry?.path();
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if !["crash-", "timeout-", "oom-", "leak-"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let dest = dir.join(format!("{name}.bin"));
        std::fs::copy(&path, &dest)?;
        let mut replay = cmd::new(
            "cargo",
            &[
                "run",
                "-q",
                "-p",
                "hearth-fuzz",
                "--bin",
                "fuzz-replay",
                "--",
            ],
            &root(),
        );
        replay.arg(&dest);
        let report = replay
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_else(|e| format!("replay failed to start: {e}"));
        std::fs::write(dir.join(format!("{name}.txt")), report)?;
        saved.push(dest);
    }
    Ok(saved)
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}
