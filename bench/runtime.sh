#!/usr/bin/env bash
# berth-runc beside runc and crun as raw OCI runtimes: the shared harness's
# runtime.sh (run of /bin/true, create+start+delete, each step alone) on one
# busybox bundle, interleaved, in one run; prints the side-by-side report.
#   bench/runtime.sh                  BENCH_RUNS=50 bench/runtime.sh
set -euo pipefail
cd "$(dirname "$0")/.."
HARNESS=${BENCH_HARNESS:-$(cd ../shared/bench && pwd)}
cargo build --release --bins -q
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
source bench/lib.sh
bench_work berth-rtbench
export BENCH_DATA=$work/data BENCH_OUT=${BENCH_OUT:-$PWD/bench/results/runtime}
export BERTH_RUNTIME=$BIN/berth-runc
bundle=$BENCH_DATA/oci-bundle
mkdir -p "$bundle/rootfs" "$BENCH_OUT"
"$BIN/berth-fixtures" rootfs -o "$work/rootfs.tar"
tar -C "$bundle/rootfs" -xf "$work/rootfs.tar"
( cd "$bundle" && runc spec && jq '.process.terminal=false | .process.args=["true"]' config.json >c.json && mv c.json config.json )
tag=$(date +%Y%m%d-%H%M%S)
runtimes=(berth runc)
command -v crun >/dev/null && runtimes+=(crun)
for rt in "${runtimes[@]}"; do
  RESULTS=$BENCH_OUT/$tag-$rt.tsv "$HARNESS/runtime.sh" "$rt" || echo "WARNING: $rt failed" >&2
done
"$HARNESS/report.sh" "$BENCH_OUT/$tag-"*.tsv | tee "$BENCH_OUT/$tag-report.md"
