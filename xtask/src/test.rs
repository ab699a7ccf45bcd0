//! `cargo xtask test`: every check the project has, in order, stopping at the first failure.
//!
//! A stage whose prerequisite does not exist yet (a crate or script still being written) is
//! skipped with the reason; a stage that exists and fails is a failure, never a skip.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::{Error, Result, cmd, fuzz, root, tools, www};

enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

struct Stage {
    name: &'static str,
    what: &'static str,
    run: fn() -> Outcome,
}

const STAGES: &[Stage] = &[
    Stage {
        name: "install",
        what: "install missing tools and packages",
        run: install,
    },
    Stage {
        name: "fmt",
        what: "cargo fmt --all -- --check",
        run: fmt,
    },
    Stage {
        name: "clippy",
        what: "cargo clippy --workspace --all-targets -- -D warnings, and hearth-web for wasm32",
        run: clippy,
    },
    Stage {
        name: "native",
        what: "cargo test --workspace",
        run: native,
    },
    Stage {
        name: "core-wasm",
        what: "cargo build -p hearth-core --target wasm32-unknown-unknown",
        run: core_wasm,
    },
    Stage {
        name: "web-wasm",
        what: "cargo test -p hearth-web --target wasm32-unknown-unknown (headless Chromium)",
        run: web_wasm,
    },
    Stage {
        name: "interop",
        what: "tests/interop/run.sh (matrix-js-sdk, matrix-nio against hearth-testhost)",
        run: interop,
    },
    Stage {
        name: "interop-synapse",
        what: "tests/interop/synapse/run.sh (Synapse and hearth-testhost federating, matrix-nio on both)",
        run: interop_synapse,
    },
    Stage {
        name: "e2e",
        what: "node --test tests/e2e/ (Playwright, relay, fresh www/ and www/hydrogen/)",
        run: e2e,
    },
    Stage {
        name: "fuzz",
        what: "cargo +nightly fuzz run requests for 45 s (fuzz/); fails on any crash",
        run: fuzz_stage,
    },
];

/// How long the CI stage fuzzes: under a minute, after the build.
const FUZZ_SECONDS: u64 = 45;

/// Which stages to run: all, or the named ones (install always comes first).
fn select(args: &[String]) -> Result<Vec<&'static Stage>> {
    if args.is_empty() {
        return Ok(STAGES.iter().collect());
    }
    for a in args {
        if !STAGES.iter().any(|s| s.name == a) {
            let names: Vec<_> = STAGES.iter().map(|s| s.name).collect();
            return Err(Error::Other(format!(
                "unknown stage {a:?}; stages: {}",
                names.join(", ")
            )));
        }
    }
    Ok(STAGES
        .iter()
        .filter(|s| s.name == "install" || args.iter().any(|a| a == s.name))
        .collect())
}

pub fn test(args: &[String]) -> Result<()> {
    let stages = select(args)?;
    let mut results: Vec<(&Stage, Option<(Outcome, Duration)>)> = Vec::new();
    let mut failed = false;
    for stage in stages {
        if failed {
            results.push((stage, None));
            continue;
        }
        println!("\n==> {}: {}", stage.name, stage.what);
        let start = Instant::now();
        let outcome = (stage.run)();
        let took = start.elapsed();
        match &outcome {
            Outcome::Passed => println!("==> {}: passed in {:.1}s", stage.name, took.as_secs_f64()),
            Outcome::Failed(why) => {
                println!("==> {}: FAILED: {why}", stage.name);
                failed = true;
            }
            Outcome::Skipped(why) => println!("==> {}: skipped: {why}", stage.name),
        }
        results.push((stage, Some((outcome, took))));
    }

    let (mut passed, mut failures, mut skipped) = (0, 0, 0);
    println!("\nsummary:");
    for (stage, result) in &results {
        let line = match result {
            Some((Outcome::Passed, t)) => {
                passed += 1;
                format!("passed   {:>7.1}s", t.as_secs_f64())
            }
            Some((Outcome::Failed(why), t)) => {
                failures += 1;
                format!("FAILED   {:>7.1}s  {why}", t.as_secs_f64())
            }
            Some((Outcome::Skipped(why), _)) => {
                skipped += 1;
                format!("skipped            {why}")
            }
            None => "not run            (an earlier stage failed)".to_owned(),
        };
        println!("  {:<16} {line}", stage.name);
    }
    if skipped > 0 {
        println!("{passed} passed, {failures} failed, {skipped} skipped");
    } else {
        println!("{passed} passed, {failures} failed");
    }
    if failures > 0 {
        Err(Error::Other("tests failed".into()))
    } else {
        Ok(())
    }
}

fn outcome(r: Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Passed,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

fn cargo(args: &[&str]) -> Command {
    cmd::new("cargo", args, &root())
}

fn web_exists() -> bool {
    root().join("web/Cargo.toml").is_file()
}

fn install() -> Outcome {
    outcome((|| {
        tools::ensure_wasm_target()?;
        if web_exists() {
            tools::ensure_wasm_bindgen()?;
        }
        tools::ensure_chromium()?;
        tools::ensure_npm_packages()?;
        tools::ensure_interop_venv()?;
        tools::ensure_synapse_venv()
    })())
}

fn fmt() -> Outcome {
    outcome(cmd::run(&mut cargo(&["fmt", "--all", "--", "--check"])))
}

fn clippy() -> Outcome {
    outcome(
        cmd::run(&mut cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
        // The browser host's code is behind `cfg(target_arch = "wasm32")`: native clippy never
        // sees it.
        .and_then(|()| {
            cmd::run(&mut cargo(&[
                "clippy",
                "-p",
                "hearth-web",
                "--target",
                tools::WASM_TARGET,
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        }),
    )
}

fn native() -> Outcome {
    outcome(cmd::run(&mut cargo(&["test", "--workspace"])))
}

fn core_wasm() -> Outcome {
    outcome(cmd::run(&mut cargo(&[
        "build",
        "-p",
        "hearth-core",
        "--target",
        tools::WASM_TARGET,
    ])))
}

fn web_wasm() -> Outcome {
    if !web_exists() {
        return Outcome::Skipped("web/ (crate hearth-web) does not exist yet".into());
    }
    let mut c = cargo(&["test", "-p", "hearth-web", "--target", tools::WASM_TARGET]);
    c.env("CHROMEDRIVER", tools::CHROMEDRIVER);
    outcome(cmd::run(&mut c))
}

fn interop() -> Outcome {
    interop_script("tests/interop/run.sh")
}

/// Both scenarios: federation.py, then rooms.py.
fn interop_synapse() -> Outcome {
    interop_script("tests/interop/synapse/run.sh")
}

/// An interop runner, given the testhost the native stage built.
fn interop_script(path: &str) -> Outcome {
    let script = root().join(path);
    if !script.is_file() {
        return Outcome::Skipped(format!("{path} does not exist yet"));
    }
    outcome((|| {
        native_binaries()?;
        let mut bash = cmd::new("bash", &[], &root());
        bash.arg(&script).env(
            "HEARTH_TESTHOST_BIN",
            www::target_dir().join("debug/hearth-testhost"),
        );
        cmd::run(&mut bash)
    })())
}

/// The native binaries (testhost, relay) as the native stage builds them: the same command,
/// so after that stage this is a no-op instead of a rebuild with another feature set.
fn native_binaries() -> Result<()> {
    cmd::run(&mut cargo(&["test", "--workspace", "--no-run"]))
}

fn e2e() -> Outcome {
    let dir = root().join("tests/e2e");
    if !dir.join("package.json").is_file() {
        return Outcome::Skipped("tests/e2e/package.json does not exist yet".into());
    }
    if let Some(why) = www::missing_prerequisite() {
        return Outcome::Skipped(why);
    }
    outcome((|| {
        tools::ensure_wasm_bindgen()?;
        www::build_release()?;
        www::build_hydrogen()?;
        native_binaries()?;
        let mut node = cmd::new(
            "node",
            &["--test", "--test-concurrency=1", "tests/e2e/"],
            &root(),
        );
        node.env(
            "HEARTH_RELAY_BIN",
            www::target_dir().join("debug/hearth-relay"),
        )
        .env(
            "HEARTH_TESTHOST_BIN",
            www::target_dir().join("debug/hearth-testhost"),
        )
        .env("HEARTH_WWW", root().join("www"))
        .env("CHROMIUM", tools::CHROMIUM);
        cmd::run(&mut node)
    })())
}

fn fuzz_stage() -> Outcome {
    if !root().join("fuzz/libfuzzer/Cargo.toml").is_file() {
        return Outcome::Skipped("fuzz/libfuzzer/ does not exist yet".into());
    }
    outcome(fuzz::ensure_toolchain().and_then(|()| fuzz::short_run(FUZZ_SECONDS)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_are_unique_and_install_comes_first() {
        assert_eq!(STAGES[0].name, "install");
        let mut names: Vec<_> = STAGES.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), STAGES.len());
    }

    #[test]
    fn selecting_stages_keeps_order_and_install() {
        let picked = select(&["e2e".to_owned(), "fmt".to_owned()]).unwrap();
        let names: Vec<_> = picked.iter().map(|s| s.name).collect();
        assert_eq!(names, ["install", "fmt", "e2e"]);
        assert!(select(&["bogus".to_owned()]).is_err());
    }
}
