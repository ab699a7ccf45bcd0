//! Replays fuzz inputs on stable and prints what each did: `cargo run -p hearth-fuzz --bin
//! fuzz-replay -- FILE...`. Exits non-zero if any input breaks an invariant that is not known.
//! `fuzz-replay --write-seeds DIR` writes the hand-written seed inputs (`seed.rs`) into DIR.

use std::process::ExitCode;

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: fuzz-replay FILE...");
        return ExitCode::FAILURE;
    }
    let harness = hearth_fuzz::Harness::new();
    if files[0] == "--write-seeds" {
        let Some(dir) = files.get(1) else {
            eprintln!("usage: fuzz-replay --write-seeds DIR");
            return ExitCode::FAILURE;
        };
        for (name, script) in hearth_fuzz::seed::seeds(harness.routes()) {
            let Some(bytes) = hearth_fuzz::seed::encode(&script) else {
                eprintln!("seed {name} cannot be encoded");
                return ExitCode::FAILURE;
            };
            let path = std::path::Path::new(dir).join(format!("seed-{name}"));
            if let Err(e) = std::fs::write(&path, bytes) {
                eprintln!("{}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let mut failed = false;
    for file in &files {
        let data = match std::fs::read(file) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{file}: {e}");
                failed = true;
                continue;
            }
        };
        let report = harness.run_bytes(&data);
        println!("== {file}\n{report}");
        failed |= report.failure.is_some();
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
