#!/usr/bin/env bash
# Interop over federation: one Synapse and one hearth-testhost on loopback, with matrix-nio
# clients on both sides.
#
#   tests/interop/synapse/run.sh                # federation.py (profiles, keys, room directory)
#                                               # then rooms.py (joins, messages, typing,
#                                               # receipts, power levels, backfill, to-device, ...)
#   tests/interop/synapse/run.sh --no-rooms     # federation.py only
#
# Installs matrix-synapse and matrix-nio into tests/interop/synapse/.venv from requirements.txt
# when they are missing, builds the testhost (or takes HEARTH_TESTHOST_BIN), starts Synapse
# (synapse_peer.py: fresh SQLite database, self-signed certificate, named 127.0.0.1:<port>) and
# the testhost (--server-name 127.0.0.1:<its federation port> --federation-insecure-tls) on
# free ports, runs the scenarios, stops both, and ends with `interop-synapse: N passed, M failed`
# (a step skipped because a step it needs failed counts as failed). Exits non-zero on any
# failure. Logs (both servers', each scenario's) are kept when something failed.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
scenarios=(federation rooms)
for arg in "$@"; do
    case "$arg" in
    --rooms) ;;
    --no-rooms) scenarios=(federation) ;;
    -h | --help)
        sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "interop-synapse: unknown argument '$arg' (--rooms, --no-rooms)" >&2
        exit 2
        ;;
    esac
done

log_dir="$(mktemp -d "${TMPDIR:-/tmp}/hearth-interop-synapse.XXXXXX")"
host_pid=""
synapse_pid=""
keep_logs=1
stop() {
    local pid="$1"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
}
cleanup() {
    stop "$host_pid"
    stop "$synapse_pid"
    if [ "$keep_logs" -eq 0 ]; then rm -rf "$log_dir"; else echo "interop-synapse: logs kept in $log_dir" >&2; fi
}
trap cleanup EXIT

die() {
    echo "interop-synapse: $*" >&2
    echo "interop-synapse: 0 passed, 1 failed"
    exit 1
}

# --- Synapse and matrix-nio ------------------------------------------------------------------
venv="$here/.venv"
py="$venv/bin/python"
# `requirements.installed` is what the venv was made from (cargo xtask keeps it the same way).
if [ ! -x "$py" ] || ! cmp -s "$here/requirements.txt" "$venv/requirements.installed" ||
    ! "$py" -c "import synapse, nio, signedjson" 2>/dev/null; then
    echo "interop-synapse: installing matrix-synapse and matrix-nio into $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" ||
        die "pip install failed"
    cp "$here/requirements.txt" "$venv/requirements.installed"
fi
command -v openssl >/dev/null || die "openssl is missing (Debian: apt-get install openssl)"

# --- hearth-testhost -------------------------------------------------------------------------
# `cargo xtask test` passes the binary its native stage already built (HEARTH_TESTHOST_BIN).
bin="${HEARTH_TESTHOST_BIN:-}"
if [ -z "$bin" ]; then
    echo "interop-synapse: building hearth-testhost"
    (cd "$root" && cargo build --quiet -p hearth-testhost) || die "cargo build -p hearth-testhost failed"
    target="${CARGO_TARGET_DIR:-target}"
    case "$target" in /*) ;; *) target="$root/$target" ;; esac
    bin="$target/debug/hearth-testhost"
fi
[ -x "$bin" ] || die "$bin is not an executable"

# --- both servers, started together ----------------------------------------------------------
"$py" "$here/synapse_peer.py" serve --dir "$log_dir/synapse" >"$log_dir/synapse.out" 2>"$log_dir/synapse.err" &
synapse_pid=$!
# Port 0 in the server name takes the federation listener's port: `127.0.0.1:<that port>`.
"$bin" --listen 127.0.0.1:0 --server-name 127.0.0.1:0 --federation-listen 127.0.0.1:0 \
    --federation-insecure-tls >"$log_dir/host.out" 2>"$log_dir/host.err" &
host_pid=$!

line_of() { # <file> <prefix> <pid> <seconds>: waits for the server's first line
    local i
    for i in $(seq 1 $(($4 * 10))); do
        if grep -q "^$2 listening on " "$1" 2>/dev/null; then
            head -n1 "$1"
            return 0
        fi
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
field() { echo "$1" | sed -n "s/.* $2=\([^ ]*\).*/\1/p"; }

host_line="$(line_of "$log_dir/host.out" hearth-testhost "$host_pid" 30)" || {
    tail -n 20 "$log_dir/host.err" >&2
    die "hearth-testhost did not start"
}
synapse_line="$(line_of "$log_dir/synapse.out" synapse "$synapse_pid" 120)" || {
    cat "$log_dir/synapse.err" >&2
    die "Synapse did not start (its log: $log_dir/synapse/homeserver.log)"
}
echo "interop-synapse: $host_line"
echo "interop-synapse: $synapse_line"
hearth_url="$(echo "$host_line" | sed -n 's/^hearth-testhost listening on \(http:[^ ]*\) .*/\1/p')"
hearth_name="$(field "$host_line" server_name)"
synapse_url="$(echo "$synapse_line" | sed -n 's/^synapse listening on \(http:[^ ]*\) .*/\1/p')"
synapse_name="$(field "$synapse_line" server_name)"

# --- scenarios -------------------------------------------------------------------------------
total_passed=0
total_failed=0
total_skipped=0
for s in "${scenarios[@]}"; do
    echo "interop-synapse: --- $s ---"
    (cd "$here" && timeout 600 "$py" "$here/$s.py" \
        --synapse-url "$synapse_url" --synapse-name "$synapse_name" \
        --hearth-url "$hearth_url" --hearth-name "$hearth_name") 2>&1 | tee "$log_dir/$s.log"
    rc=${PIPESTATUS[0]}
    summary="$(grep -E "^$s: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$" "$log_dir/$s.log" | tail -n1)"
    if [ -z "$summary" ]; then
        echo "interop-synapse: $s ended (exit $rc) without its summary line: counted as one failure"
        total_failed=$((total_failed + 1))
        continue
    fi
    read -r p f k < <(echo "$summary" | sed -E 's/^[a-z]+: ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped$/\1 \2 \3/')
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
    total_skipped=$((total_skipped + k))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && [ "$k" -eq 0 ]; then
        echo "interop-synapse: $s exited $rc although every step passed: counted as one failure"
        total_failed=$((total_failed + 1))
    fi
done

for server in "hearth-testhost:$host_pid:$log_dir/host.err" "Synapse:$synapse_pid:$log_dir/synapse/homeserver.log"; do
    IFS=: read -r what pid log <<<"$server"
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "interop-synapse: $what died during the run; its log:"
        tail -n 40 "$log"
        total_failed=$((total_failed + 1))
    fi
done
if grep -q "panicked" "$log_dir/host.err"; then
    echo "interop-synapse: hearth-testhost panicked during the run:"
    grep -A5 "panicked" "$log_dir/host.err" | head -n 40
    total_failed=$((total_failed + 1))
fi

if [ "$total_skipped" -gt 0 ]; then
    echo "interop-synapse: $total_skipped of the failures are steps skipped because a step they need failed"
fi
echo "interop-synapse: $total_passed passed, $((total_failed + total_skipped)) failed"
if [ "$total_failed" -eq 0 ] && [ "$total_skipped" -eq 0 ]; then
    keep_logs=0
    exit 0
fi
exit 1
