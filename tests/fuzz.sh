#!/usr/bin/env bash
# Fuzz pullguard's parsers with cargo-fuzz (libFuzzer): tests/fuzz.sh [SECONDS_PER_TARGET]
#
# Builds the targets of fuzz/ once (release, debug assertions, AddressSanitizer), then runs each
# for SECONDS_PER_TARGET (default 60) from the committed seeds in fuzz/seeds/<target>/. New inputs
# go to fuzz/corpus/<target>/, crashes to fuzz/artifacts/<target>/, logs to fuzz/logs/ (all
# gitignored: a run never changes a committed file). Fails when any target finds a crash.
#
# Environment:
#   FUZZ_TARGETS="reference manifest"  run a subset
#   FUZZ_SANITIZER=address|none        force a sanitizer (default: address, falling back to none
#                                      when the toolchain cannot build it)
#   FUZZ_TOOLCHAIN=nightly|bootstrap   force `cargo +nightly fuzz` or `RUSTC_BOOTSTRAP=1 cargo fuzz`
#                                      (default: nightly when rustup lists one)
#   FUZZ_TARGET_DIR=DIR                where the instrumented build goes (default fuzz/target); a
#                                      directory outside the clone lets CI reuse it between runs
#   FUZZ_TARGET_DIR_MAX_GIB=N          a reused FUZZ_TARGET_DIR larger than this is removed before
#                                      building (default 5)
#   FUZZ_CODEGEN_UNITS=N               faster builds, slower fuzzing (cargo-fuzz's default is 1)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET]  (a positive integer, default 60)" >&2
    exit 2
fi
read -r -a targets <<<"${FUZZ_TARGETS:-reference admission_review manifest docker_config}"

max_len_of() {
    case "$1" in
        reference) echo 4200 ;;          # a little past ImageRef's 4096-byte input limit
        admission_review) echo 65536 ;;
        manifest) echo 32768 ;;
        docker_config) echo 16384 ;;
        *) echo 4096 ;;
    esac
}
dict_of() {
    case "$1" in
        reference) echo fuzz/dicts/reference.dict ;;
        *) echo fuzz/dicts/json.dict ;;
    esac
}

# cargo-fuzz, only if missing.
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# libFuzzer needs nightly rustc flags: a nightly toolchain if rustup has one, else RUSTC_BOOTSTRAP.
toolchain_choice="${FUZZ_TOOLCHAIN:-}"
if [[ -z "$toolchain_choice" ]]; then
    toolchain_choice=bootstrap
    toolchains="$(rustup toolchain list 2>/dev/null || true)"
    if grep -q '^nightly' <<<"$toolchains"; then
        toolchain_choice=nightly
    fi
fi
if [[ "$toolchain_choice" == nightly ]]; then
    fuzz=(cargo +nightly fuzz)
    toolchain=nightly
elif [[ "$toolchain_choice" != bootstrap ]]; then
    echo "fuzz: FUZZ_TOOLCHAIN must be nightly or bootstrap, not $toolchain_choice" >&2
    exit 2
else
    fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
    toolchain="$(rustc --version) with RUSTC_BOOTSTRAP=1"
fi

# The fuzz crate is its own workspace; its lock file is taken from the root one whenever that
# changes (both copies gitignored), so the fuzzed dependency versions are the shipped ones plus
# libfuzzer-sys.
if [[ ! -f fuzz/Cargo.lock ]] || ! cmp -s Cargo.lock fuzz/Cargo.lock.root; then
    cp Cargo.lock fuzz/Cargo.lock
    cp Cargo.lock fuzz/Cargo.lock.root
fi

target_dir="$(realpath -m "${FUZZ_TARGET_DIR:-fuzz/target}")"
# Cargo never deletes artifacts: every new nightly and dependency bump leaves a full instrumented
# build behind in a reused directory. Past the cap it is started afresh (only a directory cargo
# marked as its own, so a mistyped FUZZ_TARGET_DIR is never removed).
cap_gib="${FUZZ_TARGET_DIR_MAX_GIB:-5}"
if [[ -f "$target_dir/CACHEDIR.TAG" ]]; then
    used_kib="$(du -sk "$target_dir" | cut -f1)"
    if ((used_kib > cap_gib * 1024 * 1024)); then
        echo "fuzz: $target_dir holds $((used_kib / 1024 / 1024)) GiB (cap $cap_gib GiB), mostly older builds; starting it afresh"
        rm -rf "$target_dir"
    fi
fi
# Every target in one cargo invocation (release, debug assertions and overflow checks on).
build() {
    echo "fuzz: building the fuzz targets ($toolchain, sanitizer $1)"
    local start=$SECONDS
    local extra=()
    [[ -n "${FUZZ_CODEGEN_UNITS:-}" ]] && extra+=(--codegen-units "$FUZZ_CODEGEN_UNITS")
    "${fuzz[@]}" build -O --debug-assertions --sanitizer "$1" --target-dir "$target_dir" "${extra[@]}" || return 1
    echo "fuzz: build took $((SECONDS - start)) s"
}
sanitizer="${FUZZ_SANITIZER:-address}"
if ! build "$sanitizer"; then
    if [[ "$sanitizer" == address && -z "${FUZZ_SANITIZER:-}" ]]; then
        echo "fuzz: AddressSanitizer build failed with $toolchain; building without a sanitizer"
        sanitizer=none
        build none || { echo "fuzz: build failed"; echo "fuzz: 0 passed, ${#targets[@]} failed"; exit 1; }
    else
        echo "fuzz: build failed"
        echo "fuzz: 0 passed, ${#targets[@]} failed"
        exit 1
    fi
fi

triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$target_dir/$triple/release"
mkdir -p fuzz/logs
passed=0
failed=0
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    artifacts="fuzz/artifacts/$target"
    log="fuzz/logs/$target.log"
    mkdir -p "$corpus" "$artifacts"
    marker="$(mktemp)"
    echo "fuzz: $target for ${seconds}s (max_len $(max_len_of "$target"))"
    status=0
    # The first corpus directory receives new inputs; the seeds are only read.
    # The outer timeout is a safety net: libFuzzer stops itself at -max_total_time.
    timeout --kill-after=10 "$((seconds + 120))" "$bin_dir/$target" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -max_len="$(max_len_of "$target")" -dict="$(dict_of "$target")" \
        -artifact_prefix="$artifacts/" -print_final_stats=1 \
        "$corpus" "fuzz/seeds/$target" >"$log" 2>&1 || status=$?
    runs="$(sed -n 's/^Done \([0-9]*\) runs in .*/\1/p' "$log" | tail -n 1)"
    crashes="$(find "$artifacts" -type f -newer "$marker" \
        \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)"
    rm -f "$marker"
    if [[ "$status" -eq 0 && -z "$crashes" ]]; then
        passed=$((passed + 1))
        echo "fuzz: $target ok: ${runs:-?} runs, corpus $(find "$corpus" -type f | wc -l) inputs"
    else
        failed=$((failed + 1))
        echo "fuzz: $target FAILED (exit $status); from $log:"
        grep -m 3 -A 1 -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)' "$log" | sed 's/^/    /' || true
        echo "    ..."
        tail -n 12 "$log" | sed 's/^/    /'
        for artifact in $crashes; do
            echo "fuzz: $target artifact: $artifact"
            echo "      reproduce: $bin_dir/$target $artifact"
            echo "      minimise:  ${fuzz[*]} tmin -O --debug-assertions --sanitizer $sanitizer --target-dir $target_dir $target $artifact"
        done
    fi
done

echo "fuzz: $passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
