//! Findings that are understood and being fixed elsewhere. The harness still detects them and
//! reports them, but they do not fail a fuzz run; each has a regression input under
//! `fuzz/regressions/known/` that the replay test requires to still fail this way, so that
//! the entry is dropped (and its input moved to `fuzz/regressions/`) when the fix lands.
//!
//! An input for a new entry: fuzz with `HEARTH_FUZZ_STRICT=1` (known findings crash too), then
//! `cargo +nightly fuzz tmin` the crash.

use crate::check::{Finding, Invariant};

#[derive(Debug)]
pub struct Known {
    /// Names the regression input: `fuzz/regressions/known/<id>.bin`.
    pub id: &'static str,
    pub invariant: Invariant,
    /// A part of the finding's route (`METHOD /template`).
    pub route: &'static str,
    /// A part of the finding's detail.
    pub detail: &'static str,
    pub why: &'static str,
}

pub const KNOWN: &[Known] = &[];

impl Known {
    pub fn matches(&self, f: &Finding) -> bool {
        self.invariant == f.invariant
            && f.route.contains(self.route)
            && f.detail.contains(self.detail)
    }
}

/// The known entry a finding is, if any.
pub fn known(f: &Finding) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.matches(f))
}
