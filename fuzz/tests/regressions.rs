//! Every failure the fuzzer found stays a test: the inputs under `fuzz/regressions/` are
//! replayed on stable and must pass every invariant; those under `fuzz/regressions/known/`
//! are known findings being fixed elsewhere and must still fail the way `known.rs` says (so
//! that a fix is noticed and the input moves up). The corpus is replayed too, as a smoke test
//! of the harness over many shapes of input.

use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use hearth_fuzz::input::{Action, HistoryVisibility, Pick, Preset, Script, Step};
use hearth_fuzz::known::KNOWN;
use hearth_fuzz::seed::{self, act};
use hearth_fuzz::{Harness, Report};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_none_or(|x| x != "txt" && x != "md"))
        .collect();
    files.sort();
    files
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn saved_failures_pass_every_invariant() {
    let h = Harness::new();
    let mut failures = Vec::new();
    let files = inputs(&fuzz_dir().join("regressions"));
    for file in &files {
        let report = h.run_bytes(&read(file));
        if report.failure.is_some() {
            failures.push(format!("{}:\n{report}", file.display()));
        }
    }
    println!("replayed {} regression inputs", files.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn known_findings_still_occur() {
    let h = Harness::new();
    let dir = fuzz_dir().join("regressions/known");
    let mut problems = Vec::new();
    for k in KNOWN {
        let file = dir.join(format!("{}.bin", k.id));
        if !file.is_file() {
            problems.push(format!(
                "known finding {} has no input at {}",
                k.id,
                file.display()
            ));
            continue;
        }
        let report = h.run_bytes(&read(&file));
        if let Some(f) = &report.failure {
            problems.push(format!(
                "{}: fails in another way than known:\n{f}",
                file.display()
            ));
        } else if !report.known.iter().any(|(_, found)| found.id == k.id) {
            problems.push(format!(
                "{}: the known finding {} no longer occurs ({}): move the input to \
                 fuzz/regressions/ and drop the entry from fuzz/src/known.rs",
                file.display(),
                k.id,
                k.why
            ));
        }
    }
    for file in inputs(&dir) {
        let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned());
        if !KNOWN.iter().any(|k| Some(k.id) == stem.as_deref()) {
            problems.push(format!("{}: no entry in known.rs", file.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn corpus_inputs_run() {
    let h = Harness::new();
    let files = inputs(&fuzz_dir().join("corpus/requests"));
    let mut failures = Vec::new();
    let mut requests = 0;
    for file in &files {
        let report = h.run_bytes(&read(file));
        requests += report.transcript.len();
        if report.failure.is_some() {
            failures.push(format!("{}:\n{report}", file.display()));
        }
    }
    println!("replayed {} corpus inputs, {requests} steps", files.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn sync(who: u8) -> Step {
    seed::sync(who, false)
}

/// The seeds' bytes decode back to the scripts they were made from: the encoder follows
/// `arbitrary`'s layout.
#[test]
fn seeds_decode_to_themselves() {
    let h = Harness::new();
    let seeds = seed::seeds(h.routes());
    assert!(seeds.len() > 10);
    for (name, script) in seeds {
        let bytes = seed::encode(&script).unwrap_or_else(|| panic!("{name} cannot be encoded"));
        let back = Script::arbitrary_take_rest(Unstructured::new(&bytes))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(format!("{back:?}"), format!("{script:?}"), "{name}");
    }
}

/// A room whose history is `joined`: a message before bob joins must stay hidden from him in
/// every endpoint that hands out events. Checks that the visibility invariant is wired to each.
#[test]
fn history_before_a_joined_only_join_is_checked_everywhere() {
    let h = Harness::new();
    let script = Script {
        steps: vec![
            act(
                0,
                Action::CreateRoom {
                    preset: Preset::Public,
                    history: Some(HistoryVisibility::Joined),
                    invite: None,
                },
            ),
            act(
                0,
                Action::Send {
                    room: Pick(0),
                    text: 1,
                },
            ),
            act(1, Action::Join { room: Pick(0) }),
            act(
                1,
                Action::Messages {
                    room: Pick(0),
                    backward: true,
                    limit: 10,
                },
            ),
            act(1, Action::Event { event: Pick(0) }),
            sync(1),
        ],
    };
    let report: Report = h.run(&script);
    println!("{report}");
    let leaks: Vec<_> = report
        .failure
        .iter()
        .chain(report.known.iter().map(|(f, _)| f))
        .filter(|f| f.invariant == hearth_fuzz::check::Invariant::Visibility)
        .collect();
    // Every step ran: /messages and /event passed the check, and a finding stops a run.
    assert_eq!(report.transcript.len(), 6, "{report}");
    for f in &leaks {
        assert!(f.route.ends_with("/sync"), "{f}");
    }
}
