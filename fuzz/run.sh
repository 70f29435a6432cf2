#!/usr/bin/env bash
# Builds Ferry's fuzz targets, replays the kept crash inputs, and fuzzes each
# target for a bounded time (STYLE.md 17, SECURITY.md C13). deploy/test.sh
# (and so CI) calls it with FERRY_FUZZ_SECONDS (default 30).
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# Targets run in parallel, one per core (FERRY_FUZZ_JOBS overrides), each for
# SECONDS. SECONDS = 0 only builds the targets and replays
# fuzz/regressions/ (files named *.pending are known, unfixed crashers: they
# are replayed and reported but do not fail the run). Exits
# non-zero if a build fails, a kept regression input crashes again, or
# fuzzing finds a crash, leak, timeout or out-of-memory input; new inputs
# are copied to fuzz/regressions/<target>/ and printed.
#
# Toolchain: cargo-fuzz needs nightly compiler flags (-Zsanitizer=address,
# coverage instrumentation). With a rustup `nightly` toolchain installed the
# script runs `cargo +nightly fuzz`; otherwise it runs `cargo fuzz` on the
# default (stable) toolchain with RUSTC_BOOTSTRAP=1, which unlocks those
# flags (stable ships the x86_64 ASan runtime). FERRY_FUZZ_TOOLCHAIN=stable
# or =nightly forces one. cargo-fuzz itself is installed from crates.io
# (`cargo install cargo-fuzz --locked`) when missing.
set -euo pipefail
cd "$(dirname "$0")"

ALL_TARGETS=(request ssh_command gitosis_conf keys archive_list tree_manifest)

usage() {
    echo "usage: $0 SECONDS [TARGET...]   (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
}
[ $# -ge 1 ] || usage
seconds="$1"
shift
case "$seconds" in '' | *[!0-9]*) usage ;; esac
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || usage
done

t0=$SECONDS
export RUST_BACKTRACE=1 # panic messages come with the Rust stack
log() { printf '==> [%4ss] %s\n' "$((SECONDS - t0))" "$*"; }

# --- cargo-fuzz -----------------------------------------------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi

# --- toolchain ------------------------------------------------------------
toolchain="${FERRY_FUZZ_TOOLCHAIN:-}"
if [ -z "$toolchain" ]; then
    if cargo +nightly --version >/dev/null 2>&1; then toolchain=nightly; else toolchain=stable; fi
fi
case "$toolchain" in
    nightly) fuzz=(cargo +nightly fuzz) ;;
    stable)
        # `+stable` only when forced, so a machine without rustup (or whose
        # default is another stable) uses its plain `cargo`.
        if [ -n "${FERRY_FUZZ_TOOLCHAIN:-}" ] && cargo +stable --version >/dev/null 2>&1; then
            fuzz=(env RUSTC_BOOTSTRAP=1 cargo +stable fuzz)
        else
            fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
        fi
        ;;
    *)
        echo "FERRY_FUZZ_TOOLCHAIN must be nightly or stable" >&2
        exit 2
        ;;
esac
log "toolchain: $toolchain ($("${fuzz[@]:0:${#fuzz[@]}-1}" --version)); $(cargo fuzz --version)"

# --- build ----------------------------------------------------------------
log "building fuzz targets: ${targets[*]}"
if [ ${#targets[@]} -eq ${#ALL_TARGETS[@]} ]; then
    "${fuzz[@]}" build # one cargo invocation for all targets
else
    for t in "${targets[@]}"; do "${fuzz[@]}" build "$t"; done
fi
log "built"
bin_dir="target/$(rustc -vV | sed -n 's/^host: //p')/release"

# --- replay kept crash inputs ----------------------------------------------
failed=()
kept_inputs() { # kept_inputs TARGET: regression files, README and dotfiles excluded
    find "regressions/$1" -maxdepth 1 -type f ! -name 'README*' ! -name '.*' 2>/dev/null | sort
}
for t in "${targets[@]}"; do
    mapfile -t files < <(kept_inputs "$t" | grep -v '\.pending$' || true)
    mapfile -t pending < <(kept_inputs "$t" | grep '\.pending$' || true)
    log "replaying ${#files[@]} regression input(s) for $t"
    if [ ${#files[@]} -gt 0 ] && ! "$bin_dir/$t" -runs=1 "${files[@]}" >"target/replay-$t.log" 2>&1; then
        cat "target/replay-$t.log"
        echo "REGRESSION: a kept input for $t crashes again (see above)"
        failed+=("$t (regression)")
    fi
    for f in "${pending[@]}"; do
        if "$bin_dir/$t" -runs=1 "$f" >/dev/null 2>&1; then
            echo "note: $f passes now; drop the .pending suffix"
        else
            echo "note: $f is a known crasher (pending fix)"
        fi
    done
done

if [ "$seconds" -eq 0 ]; then
    log "SECONDS=0: built and replayed only"
    if [ ${#failed[@]} -gt 0 ]; then
        echo "FAILED: ${failed[*]}"
        exit 1
    fi
    exit 0
fi

# --- fuzz -----------------------------------------------------------------
log "writing seed corpora"
./seeds.sh "" >/dev/null

show_input() { # show_input FILE: size and an escaped dump
    echo "--- $1 ($(wc -c <"$1") bytes)"
    od -A x -t x1z -v "$1" | head -n 64
}

fuzz_one() { # fuzz_one TARGET: runs it; its exit status goes to target/fuzz-TARGET.status
    local t="$1" status=0
    rm -rf "artifacts/$t"
    mkdir -p "artifacts/$t" "corpus/$t"
    # corpus: fuzz/corpus/<target> (cargo-fuzz default); artifacts: fuzz/artifacts/<target>/
    "${fuzz[@]}" run "$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"target/fuzz-$t.log" 2>&1 || status=$?
    echo "$status" >"target/fuzz-$t.status"
}

# One libFuzzer process per core (FERRY_FUZZ_JOBS overrides): each target
# still gets SECONDS of one core, the wall time shrinks.
jobs="${FERRY_FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"
log "fuzzing ${targets[*]} for ${seconds}s each, $jobs at a time"
running=0
for t in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    fuzz_one "$t" &
    running=$((running + 1))
done
wait || true

summary=()
for t in "${targets[@]}"; do
    status=$(cat "target/fuzz-$t.status" 2>/dev/null || echo "?")
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "target/fuzz-$t.log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "target/fuzz-$t.log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "target/fuzz-$t.log" | tail -n 1 || true)
    summary+=("$(printf '%-13s %10s execs %7s exec/s  %s  exit %s' "$t" "${execs:-?}" "${rate:-?}" "${cov:-}" "$status")")
    mapfile -t found < <(find "artifacts/$t" -maxdepth 1 -type f 2>/dev/null | sort)
    if [ "$status" != 0 ] || [ ${#found[@]} -gt 0 ]; then
        echo "=== $t failed (exit $status); log: fuzz/target/fuzz-$t.log"
        # The panic or sanitizer report with its stack, else the log's end.
        if grep -qE 'panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' "target/fuzz-$t.log"; then
            sed -n '/panicked at\|ERROR: \(AddressSanitizer\|LeakSanitizer\|libFuzzer\)/,$p' "target/fuzz-$t.log" |
                grep -v '^ *#[0-9]* 0x[0-9a-f]* in \(fuzzer::\|std::\|__libc\|_start\|main \)' | head -n 80
        else
            tail -n 80 "target/fuzz-$t.log"
        fi
        mkdir -p "regressions/$t"
        for f in "${found[@]}"; do
            cp "$f" "regressions/$t/"
            show_input "$f"
            echo "kept as fuzz/regressions/$t/$(basename "$f")"
        done
        failed+=("$t")
    fi
done

log "done"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    echo "Each crash input is in fuzz/regressions/<target>/; rename it, fix the bug and commit both."
    exit 1
fi
