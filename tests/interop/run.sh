#!/usr/bin/env bash
# Interop tests with real third-party clients against hearth-testhost.
#
#   tests/interop/run.sh            # both scenarios
#   tests/interop/run.sh js         # only matrix-js-sdk
#   tests/interop/run.sh nio        # only matrix-nio
#
# Builds the testhost, installs the clients (npm ci; a venv from requirements.txt) when they
# are missing, starts one testhost on a free loopback port, runs the scenarios against it,
# stops it, and ends with `interop: N passed, M failed, K skipped` (steps over all scenarios).
# Exits non-zero if any step failed or was skipped, or a scenario did not finish.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(js nio)

log_dir="$(mktemp -d "${TMPDIR:-/tmp}/hearth-interop.XXXXXX")"
host_pid=""
keep_logs=1
cleanup() {
    if [ -n "$host_pid" ] && kill -0 "$host_pid" 2>/dev/null; then
        kill "$host_pid" 2>/dev/null
        wait "$host_pid" 2>/dev/null
    fi
    if [ "$keep_logs" -eq 0 ]; then rm -rf "$log_dir"; else echo "interop: logs kept in $log_dir" >&2; fi
}
trap cleanup EXIT

die() {
    echo "interop: $*" >&2
    echo "interop: 0 passed, 1 failed"
    exit 1
}

# --- clients ---------------------------------------------------------------------------------
for s in "${scenarios[@]}"; do
    case "$s" in
    js)
        if [ ! -d "$here/js/node_modules/matrix-js-sdk" ]; then
            echo "interop: installing matrix-js-sdk (npm ci)"
            (cd "$here/js" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
        fi
        ;;
    nio)
        venv="$here/nio/.venv"
        if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import nio" 2>/dev/null; then
            echo "interop: installing matrix-nio into $venv"
            python3 -m venv "$venv" || die "python3 -m venv failed"
            "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/nio/requirements.txt" ||
                die "pip install failed"
        fi
        ;;
    *) die "unknown scenario '$s' (js, nio)" ;;
    esac
done

# --- server ----------------------------------------------------------------------------------
# `cargo xtask test` passes the binary its native stage already built (HEARTH_TESTHOST_BIN);
# building it again here with another feature set would cost minutes and disk.
bin="${HEARTH_TESTHOST_BIN:-}"
if [ -z "$bin" ]; then
    echo "interop: building hearth-testhost"
    (cd "$root" && cargo build --quiet -p hearth-testhost) || die "cargo build -p hearth-testhost failed"
    bin="$root/target/debug/hearth-testhost"
fi
[ -x "$bin" ] || die "$bin is not an executable"

"$bin" --listen 127.0.0.1:0 >"$log_dir/host.out" 2>"$log_dir/host.err" &
host_pid=$!
url=""
for _ in $(seq 1 300); do
    url="$(sed -n 's/^hearth-testhost listening on \(http:[^ ]*\) server_name=.*$/\1/p' "$log_dir/host.out" | head -n1)"
    [ -n "$url" ] && break
    kill -0 "$host_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$url" ]; then
    cat "$log_dir/host.err" >&2
    die "hearth-testhost did not print its URL"
fi
echo "interop: $(head -n1 "$log_dir/host.out")"

# --- scenarios -------------------------------------------------------------------------------
total_passed=0
total_failed=0
total_skipped=0
for s in "${scenarios[@]}"; do
    echo "interop: --- $s ---"
    case "$s" in
    js) cmd=(node "$here/js/scenario.mjs" "$url") ;;
    nio) cmd=("$here/nio/.venv/bin/python" "$here/nio/scenario.py" "$url") ;;
    esac
    timeout 600 "${cmd[@]}" 2>&1 | tee "$log_dir/$s.log"
    rc=${PIPESTATUS[0]}
    summary="$(grep -E "^$s: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$" "$log_dir/$s.log" | tail -n1)"
    if [ -z "$summary" ]; then
        echo "interop: $s ended (exit $rc) without its summary line: counted as one failure"
        total_failed=$((total_failed + 1))
        continue
    fi
    read -r p f k < <(echo "$summary" | sed -E 's/^[a-z]+: ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped$/\1 \2 \3/')
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
    total_skipped=$((total_skipped + k))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && [ "$k" -eq 0 ]; then
        echo "interop: $s exited $rc although every step passed: counted as one failure"
        total_failed=$((total_failed + 1))
    fi
done

if ! kill -0 "$host_pid" 2>/dev/null; then
    echo "interop: hearth-testhost died during the run; its log:"
    tail -n 40 "$log_dir/host.err"
    total_failed=$((total_failed + 1))
elif grep -q "panicked" "$log_dir/host.err"; then
    echo "interop: hearth-testhost panicked during the run:"
    grep -A5 "panicked" "$log_dir/host.err" | head -n 40
    total_failed=$((total_failed + 1))
fi

echo "interop: $total_passed passed, $total_failed failed, $total_skipped skipped"
if [ "$total_failed" -eq 0 ] && [ "$total_skipped" -eq 0 ]; then
    keep_logs=0
    exit 0
fi
exit 1
