#!/usr/bin/env bash
# Keeps the grown fuzz corpora in the repository, small: `save` minimizes each target's corpus
# (libFuzzer's -merge=1 -set_cover_merge=1: the fewest inputs that keep every feature) and writes
# it to corpora/<target>.tar.zst; `restore` unpacks those archives into corpus/<target>/, beside
# the seeds of make-seeds.sh. Machines are replaced between sessions and corpus/ is not committed:
# the corpora of the slow targets took hours to grow and were lost three times before this.
# Usage: fuzz/corpora.sh save [TARGET...]      (default: every target with a corpus/ directory)
#        fuzz/corpora.sh restore [TARGET...]   (default: every archive in corpora/)
# Needs cargo-fuzz (save builds the targets), tar and zstd.
set -euo pipefail
cd "$(dirname "$0")"
cmd=${1:-}
shift || true
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target/fuzz}
mkdir -p corpora

case "$cmd" in
save)
    targets=("$@")
    if [ ${#targets[@]} -eq 0 ]; then
        mapfile -t targets < <(cd corpus && ls -d -- */ | tr -d /)
    fi
    cargo fuzz build -s none >/dev/null
    bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
    for t in "${targets[@]}"; do
        work=$(mktemp -d)
        mkdir "$work/$t"
        # The merge runs every input once, in a child process that it restarts after a crash.
        "$bin/$t" -merge=1 -set_cover_merge=1 -max_len=262144 -timeout=10 -rss_limit_mb=2048 "$work/$t" \
            "corpus/$t" >"$work/merge.log" 2>&1 || { tail -n 5 "$work/merge.log"; exit 1; }
        # Reproducible archives: names sorted, no owners or times.
        tar -C "$work" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - "$t" |
            zstd -q -19 -T0 -f -o "corpora/$t.tar.zst"
        printf '%-16s %5d inputs -> %5d kept, %9d bytes in corpora/%s.tar.zst\n' "$t" \
            "$(ls "corpus/$t" | wc -l)" "$(ls "$work/$t" | wc -l)" "$(stat -c %s "corpora/$t.tar.zst")" "$t"
        rm -rf "$work"
    done
    ;;
restore)
    archives=()
    if [ $# -eq 0 ]; then
        shopt -s nullglob
        archives=(corpora/*.tar.zst)
    else
        for t in "$@"; do archives+=("corpora/$t.tar.zst"); done
    fi
    mkdir -p corpus
    for a in "${archives[@]}"; do
        t=$(basename "$a" .tar.zst)
        zstd -q -d -c "$a" | tar -C corpus -xf - "$t"
        printf '%-16s %5d inputs in corpus/%s\n' "$t" "$(ls "corpus/$t" | wc -l)" "$t"
    done
    ;;
*)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
