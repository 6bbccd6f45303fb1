#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 120) on the stable toolchain, one after another, each on
# its corpus (make-seeds.sh fills it) with its format's dictionary (dicts/), and prints executions,
# time and final coverage per target.
# Usage: fuzz/run-all.sh [SECONDS] [TARGET...]     Logs: fuzz/artifacts/logs/<target>.log
set -uo pipefail
cd "$(dirname "$0")"
secs=${1:-120}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target/fuzz}
logs=artifacts/logs
mkdir -p "$logs"
cargo fuzz build -s none
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    # The format's words (libFuzzer does not learn string comparisons without a sanitizer).
    dict=()
    case "$t" in
        qcow2_*) dict=(-dict=dicts/qcow2.dict) ;;
        vmdk_*) dict=(-dict=dicts/vmdk.dict) ;;
        vdi_*) dict=(-dict=dicts/vdi.dict) ;;
        vhd_*) dict=(-dict=dicts/vhd.dict) ;;
        vhdx_*) dict=(-dict=dicts/vhdx.dict) ;;
        fs_open) dict=(-dict=dicts/xfs.dict) ;;
        lvm_open) dict=(-dict=dicts/lvm.dict) ;;
        probe)
            cat dicts/*.dict >"$logs/probe.dict"
            dict=(-dict="$logs/probe.dict")
            ;;
    esac
    start=$(date +%s)
    cargo fuzz run -s none "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=262144 -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" >"$logs/$t.log" 2>&1
    rc=$?
    end=$(date +%s)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$')
    cov=$(grep -E '^#[0-9]+' "$logs/$t.log" | tail -1 | grep -o 'cov: [0-9]*' | grep -o '[0-9]*')
    ft=$(grep -E '^#[0-9]+' "$logs/$t.log" | tail -1 | grep -o 'ft: [0-9]*' | grep -o '[0-9]*')
    lastnew=$(grep -E '^#[0-9]+.*NEW ' "$logs/$t.log" | tail -1 | grep -oE '^#[0-9]+' | tr -d '#')
    # The execution at which edge coverage (cov, not the finer ft features) last grew: a plateau
    # shows as an early number here while last-new-feature keeps moving.
    lastcov=$(grep -E '^#[0-9]+.*NEW ' "$logs/$t.log" | awk '{ for (i = 1; i < NF; i++) if ($i == "cov:") c = $(i + 1) + 0
        if (c > best) { best = c; at = substr($1, 2) } } END { print at }')
    # The share of the run's executions after the last new edge: "flat for its last N%".
    flat=$(awk -v e="${execs:-0}" -v l="${lastcov:-0}" 'BEGIN { if (e > 0) printf "%d%%", 100 * (e - l) / e; else print "?" }')
    printf '%-16s rc=%d execs=%s time=%ss cov=%s ft=%s last-new-feature-at-exec=%s last-new-edge-at-exec=%s flat=%s\n' \
        "$t" "$rc" "${execs:-?}" "$((end - start))" "${cov:-?}" "${ft:-?}" "${lastnew:-?}" "${lastcov:-?}" "$flat"
done
