#!/usr/bin/env bash
# Image-store benchmark: berth beside a real dockerd, same machine, same run.
#   load:   `load -i` of a >=100 MB multi-layer docker-save archive (cold: the
#           image and its layers are removed before every run)
#   images: `images` with 200 images in the store
# Engines: berthd through the real docker CLI (berth-docker) and through the
# berth CLI (berth), and dockerd (docker) when `dockerd` is installed.
# Prints a markdown table of medians and ratios; raw hyperfine JSON in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${BENCH_RUNS:-10}
DATA=${BENCH_DATA:-/var/tmp/berth-bench}
OUT=${BENCH_OUT:-bench/results}
mkdir -p "$DATA" "$OUT"
cargo build --release --bins -q
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
[ -f "$DATA/big.tar" ] || "$BIN/berth-fixtures" big --mb 120 --layers 4 -o "$DATA/big.tar"
[ -f "$DATA/many.tar" ] || "$BIN/berth-fixtures" many --count 200 -o "$DATA/many.tar"
BIG_REF=$(tar -xOf "$DATA/big.tar" manifest.json | jq -r '.[0].RepoTags[0]')

source bench/lib.sh
bench_work berth-bench
start_berthd "$BIN"
engines=("berth-docker|env DOCKER_HOST=unix://$work/berth.sock $DOCKER" "berth|$BIN/berth -H unix://$work/berth.sock")
if start_dockerd; then
  engines+=("docker|env DOCKER_HOST=unix://$work/docker.sock $DOCKER")
fi

declare -A LOAD IMAGES
for e in "${engines[@]}"; do
  name=${e%%|*}; cli=${e#*|}
  hyperfine -N --style basic --runs "$RUNS" --warmup 1 \
    --prepare "sh -c '$cli rmi -f $BIG_REF >/dev/null 2>&1; true'" \
    --export-json "$OUT/load-$name.json" "$cli load -q -i $DATA/big.tar" >/dev/null
  LOAD[$name]=$(jq '.results[0].median' "$OUT/load-$name.json")
done
for e in "${engines[@]}"; do
  name=${e%%|*}; cli=${e#*|}
  sh -c "$cli load -q -i $DATA/many.tar" >/dev/null
  hyperfine -N --style basic --runs $((RUNS * 3)) --warmup 2 \
    --export-json "$OUT/images-$name.json" "$cli images" >/dev/null
  IMAGES[$name]=$(jq '.results[0].median' "$OUT/images-$name.json")
done

ms() { awk -v s="$1" 'BEGIN { printf "%.1f ms", s * 1000 }'; }
ratio() { [ -n "${2:-}" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", b / a }' || echo "-"; }
size=$(du -m "$DATA/big.tar" | cut -f1)
echo "| bench (median) | berth CLI | docker CLI → berthd | docker CLI → dockerd | dockerd ÷ berthd (docker CLI) |"
echo "|---|---|---|---|---|"
echo "| load ${size} MB, 4 layers | $(ms "${LOAD[berth]}") | $(ms "${LOAD[berth-docker]}") | ${LOAD[docker]:+$(ms "${LOAD[docker]}")} | $(ratio "${LOAD[berth-docker]}" "${LOAD[docker]:-}") |"
echo "| images (200 images) | $(ms "${IMAGES[berth]}") | $(ms "${IMAGES[berth-docker]}") | ${IMAGES[docker]:+$(ms "${IMAGES[docker]}")} | $(ratio "${IMAGES[berth-docker]}" "${IMAGES[docker]:-}") |"
