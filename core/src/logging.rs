//! The log levels a host starts with when nobody chose others.
//!
//! ruma logs at INFO on the hot path of every received event: each auth check is an
//! instrumented INFO span with two INFO events in it, and push-rule evaluation opens spans too.
//! In a browser each of those becomes a `console.log` or a `performance.mark`/`measure`, and
//! profiling a 5,000-event catch-up found about a fifth of the worker's busy time there.
//! Dependencies therefore log warnings only; Hearth's own crates keep INFO.

/// `tracing` directives (the `EnvFilter` / `Targets` syntax) for that default.
pub const DEFAULT_DIRECTIVES: &str = "warn,hearth_core=info,hearth_web=info,hearth_testhost=info";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_are_quieter_than_hearth() {
        let parts: Vec<&str> = DEFAULT_DIRECTIVES.split(',').collect();
        assert_eq!(parts[0], "warn");
        assert!(parts.contains(&"hearth_core=info"));
        assert!(!DEFAULT_DIRECTIVES.contains("ruma"));
    }
}
