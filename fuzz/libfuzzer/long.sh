#!/usr/bin/env bash
# The long mode of one fuzz target: libFuzzer (coverage-guided) over the committed corpus.
#
#   fuzz/libfuzzer/long.sh <target> [runs] [-- extra libFuzzer flags]
#
# Run from the repository root; needs `cargo install cargo-fuzz` and a nightly toolchain.
# `runs` defaults to 10,000,000 executions. New inputs go to target/fuzz-corpus/<target>
# (the committed corpora, fuzz/corpus/<target> and fuzz/libfuzzer/corpus/<target>, are read
# and never written); a failing input is written to fuzz/libfuzzer/artifacts/<target>/ and
# the run stops. Each run is a release build without a sanitizer
# (LOOKBACK_FUZZ_SANITIZER=address for AddressSanitizer, slower): the engine's code is safe
# Rust outside a few audited blocks, and the endpoint targets need the throughput.
set -euo pipefail

target=${1:?usage: fuzz/libfuzzer/long.sh <target> [runs] [-- libFuzzer flags]}
shift
runs=10000000
if [[ $# -gt 0 && $1 != -- ]]; then runs=$1; shift; fi
[[ ${1:-} == -- ]] && shift

here=fuzz/libfuzzer
[[ -d $here ]] || { echo "run from the repository root" >&2; exit 2; }
[[ -d fuzz/corpus/$target ]] || { echo "no target $target (fuzz/corpus/<target>)" >&2; exit 2; }
scratch=target/fuzz-corpus/$target
mkdir -p "$scratch"

# Per-target limits: an input slower than `timeout` seconds is a finding (a hang); the
# endpoint targets bound their own sessions at 2 s (sql) and 10 s (pgwire). They also run
# without the entropic schedule: each of their inputs reaches tens of thousands of coverage
# features (DataFusion, the protocol library), and entropic's per-feature bookkeeping took
# 60% of the time; without it pgwire ran 2.7 times and sql 1.3 times as many inputs a second,
# and covered more features in the same time.
flags=(-runs="$runs" -print_final_stats=1 -rss_limit_mb=4096 -malloc_limit_mb=2048)
case $target in
  sql) flags+=(-dict=$here/sql.dict -timeout=10 -max_len=4096 -entropic=0) ;;
  pgwire) flags+=(-dict=$here/pgwire.dict -timeout=30 -max_len=16384 -entropic=0) ;;
  segment) flags+=(-timeout=10 -max_len=65536) ;;
  *) flags+=(-timeout=10) ;;
esac

# The long mode's own corpus, where committed: earlier runs' inputs merged down to those that
# add coverage (`-merge=1`), so a run picks up where the last one stopped. The endpoint
# targets keep theirs here rather than in fuzz/corpus/, which the short mode runs in debug.
seeds=("fuzz/corpus/$target")
[[ -d $here/corpus/$target ]] && seeds+=("$here/corpus/$target")

exec cargo +nightly fuzz run --fuzz-dir "$here" -O -s "${LOOKBACK_FUZZ_SANITIZER:-none}" \
  "$target" "$scratch" "${seeds[@]}" -- "${flags[@]}" "$@"
