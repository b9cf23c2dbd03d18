#!/usr/bin/env bash
# Build benchmark: berthd beside a real dockerd's legacy builder
# (DOCKER_BUILDKIT=0), same machine, same run, with the shared bench's build
# context (../shared/bench/build-ctx: FROM $BASE, two RUNs, a COPY, ENV, CMD).
#   build_cold:   `build --no-cache` (every step runs; the tag is removed first)
#   build_cached: the same build again, every step from the cache
# The base: busybox plus the host's /usr/share/doc (what the first RUN lists),
# imported into each daemon. (The shared bench's Debian base needs
# debootstrap from the internet; this one is made from what the machine has.)
# Engines: the docker CLI → berthd, the berth CLI → berthd, the docker CLI →
# dockerd (if installed). Prints a markdown table of medians and ratios; raw
# hyperfine JSON in $OUT.
# Env: BENCH_BUILD_RUNS (5 cold, 3x that cached), BENCH_DATA, BENCH_OUT, BENCH_BUILD_CTX.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${BENCH_BUILD_RUNS:-5}
DATA=${BENCH_DATA:-/var/tmp/berth-bench}
OUT=${BENCH_OUT:-bench/results}
CTX=$(realpath "${BENCH_BUILD_CTX:-../shared/bench/build-ctx}")
mkdir -p "$DATA" "$OUT"
cargo build --release --bins -q
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
BASE_TAR=$DATA/build-base.tar
if [ ! -f "$BASE_TAR" ]; then
  t=$(mktemp -d /tmp/berth-bench-base.XXXX)
  "$BIN/berth-fixtures" rootfs -o "$t/rootfs.tar"
  mkdir "$t/root" && tar -C "$t/root" -xf "$t/rootfs.tar"
  mkdir -p "$t/root/usr/share" && cp -a /usr/share/doc "$t/root/usr/share/"
  tar -C "$t/root" -cf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
  rm -rf "$t"
fi

source bench/lib.sh
bench_work berth-bench-build
start_berthd "$BIN"
engines=("berth-docker|env DOCKER_BUILDKIT=0 DOCKER_HOST=unix://$work/berth.sock $DOCKER"
         "berth|$BIN/berth -H unix://$work/berth.sock")
if start_dockerd; then
  engines+=("docker|env DOCKER_BUILDKIT=0 DOCKER_HOST=unix://$work/docker.sock $DOCKER")
fi
# One import per daemon (the berth CLI shares berthd with the docker CLI).
for e in "${engines[@]}"; do
  name=${e%%|*}; cli=${e#*|}
  [ "$name" = berth ] && continue
  sh -c "$cli import $BASE_TAR bench/base:1" >/dev/null
done

declare -A COLD CACHED
for e in "${engines[@]}"; do
  name=${e%%|*}; cli=${e#*|}
  b="$cli build -q --build-arg BASE=bench/base:1 -t bench-build $CTX"
  hyperfine -N --style basic --runs "$RUNS" \
    --prepare "sh -c '$cli rmi -f bench-build >/dev/null 2>&1; true'" \
    --export-json "$OUT/build_cold-$name.json" "${b/ build / build --no-cache }" >/dev/null
  COLD[$name]=$(jq '.results[0].median' "$OUT/build_cold-$name.json")
  hyperfine -N --style basic --runs $((RUNS * 3)) --warmup 2 \
    --export-json "$OUT/build_cached-$name.json" "$b" >/dev/null
  CACHED[$name]=$(jq '.results[0].median' "$OUT/build_cached-$name.json")
done

ms() { awk -v s="$1" 'BEGIN { printf "%.1f ms", s * 1000 }'; }
ratio() { [ -n "${2:-}" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", b / a }' || echo "-"; }
echo "| bench (median) | berth CLI | docker CLI → berthd | docker CLI → dockerd (legacy builder) | dockerd ÷ berthd (docker CLI) |"
echo "|---|---|---|---|---|"
echo "| build_cold (--no-cache) | $(ms "${COLD[berth]}") | $(ms "${COLD[berth-docker]}") | ${COLD[docker]:+$(ms "${COLD[docker]}")} | $(ratio "${COLD[berth-docker]}" "${COLD[docker]:-}") |"
echo "| build_cached | $(ms "${CACHED[berth]}") | $(ms "${CACHED[berth-docker]}") | ${CACHED[docker]:+$(ms "${CACHED[docker]}")} | $(ratio "${CACHED[berth-docker]}" "${CACHED[docker]:-}") |"
