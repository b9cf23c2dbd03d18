#!/usr/bin/env bash
# Container benchmark: berth beside a real dockerd, same machine, same run.
#   run:  `run --rm busybox true`        exec: `exec C true` into a running container
#   mem:  per-container engine memory (the shim: parent of the container's init)
# berthd is measured through the real docker CLI (berth-docker) and its own CLI
# (berth); dockerd (docker) when installed. The full suite with podman and
# the other anchors is ../shared/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${BENCH_RUNS:-20}
DATA=${BENCH_DATA:-/var/tmp/berth-bench}
mkdir -p "$DATA"
cargo build --release --bins -q
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
[ -f "$DATA/busybox.tar" ] || "$BIN/berth-fixtures" busybox -o "$DATA/busybox.tar"

source bench/lib.sh
bench_work berth-cbench
start_berthd "$BIN"
engines=("berth-docker|env DOCKER_HOST=unix://$work/berth.sock $DOCKER" "berth|$BIN/berth -H unix://$work/berth.sock")
if start_dockerd; then
  engines+=("docker|env DOCKER_HOST=unix://$work/docker.sock $DOCKER")
fi
declare -A RUN EXEC MEM
for e in "${engines[@]}"; do
  name=${e%%|*}; cli=${e#*|}
  sh -c "$cli load -q -i $DATA/busybox.tar" >/dev/null
  hyperfine -N --style basic --runs "$RUNS" --warmup 2 --export-json "$work/run-$name.json" \
    "$cli run --rm --network none busybox true" >/dev/null
  RUN[$name]=$(jq '.results[0].median' "$work/run-$name.json")
  sh -c "$cli run -d --name cbench --network none busybox sleep 600" >/dev/null
  hyperfine -N --style basic --runs "$RUNS" --warmup 2 --export-json "$work/exec-$name.json" "$cli exec cbench true" >/dev/null
  EXEC[$name]=$(jq '.results[0].median' "$work/exec-$name.json")
  sleep 2
  pid=$(sh -c "$cli inspect -f '{{.State.Pid}}' cbench")
  shim=$(awk '{print $4}' "/proc/$pid/stat")
  MEM[$name]=$(awk '/^Pss:/ {print $2}' "/proc/$shim/smaps_rollup")
  sh -c "$cli rm -f cbench" >/dev/null
done
ms() { awk -v s="$1" 'BEGIN { printf "%.1f ms", s * 1000 }'; }
ratio() { [ -n "${2:-}" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fx", b / a }' || echo "-"; }
echo "| bench (median) | berth CLI | docker CLI → berthd | docker CLI → dockerd | dockerd ÷ berth CLI | dockerd ÷ berthd (docker CLI) |"
echo "|---|---|---|---|---|---|"
echo "| run --rm busybox true | $(ms "${RUN[berth]}") | $(ms "${RUN[berth-docker]}") | ${RUN[docker]:+$(ms "${RUN[docker]}")} | $(ratio "${RUN[berth]}" "${RUN[docker]:-}") | $(ratio "${RUN[berth-docker]}" "${RUN[docker]:-}") |"
echo "| exec true | $(ms "${EXEC[berth]}") | $(ms "${EXEC[berth-docker]}") | ${EXEC[docker]:+$(ms "${EXEC[docker]}")} | $(ratio "${EXEC[berth]}" "${EXEC[docker]:-}") | $(ratio "${EXEC[berth-docker]}" "${EXEC[docker]:-}") |"
echo "| per-container process PSS (shim) | ${MEM[berth]} kB | ${MEM[berth-docker]} kB | ${MEM[docker]:-} kB | | |"
echo "| berthd RSS with one container | $(awk '/VmRSS/ {print $2}' "/proc/$(cat "$work/berthd.pid")/status") kB | | | | |"
