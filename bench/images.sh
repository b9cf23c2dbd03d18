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
DOCKER=/usr/local/bin/docker
mkdir -p "$DATA" "$OUT"
cargo build --release --bins -q
BIN=$PWD/target/release
[ -f "$DATA/big.tar" ] || "$BIN/berth-fixtures" big --mb 120 --layers 4 -o "$DATA/big.tar"
[ -f "$DATA/many.tar" ] || "$BIN/berth-fixtures" many --count 200 -o "$DATA/many.tar"
BIG_REF=$(tar -xOf "$DATA/big.tar" manifest.json | jq -r '.[0].RepoTags[0]')

work=$(mktemp -d /tmp/berth-bench.XXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  grep " $work/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_sock() { for _ in $(seq 100); do DOCKER_HOST=unix://$1 $DOCKER version >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "daemon on $1 did not start" >&2; return 1; }

# berthd makes its default bridge and nftables table at start: it gets a
# network namespace of its own (gone with it), not the machine's.
unshare --net -- "$BIN/berthd" --data-root "$work/berth" -H "unix://$work/berth.sock" --pidfile "$work/berthd.pid" 2>"$work/berthd.log" &
pids+=($!)
wait_sock "$work/berth.sock"
engines=("berth-docker|env DOCKER_HOST=unix://$work/berth.sock $DOCKER" "berth|$BIN/berth -H unix://$work/berth.sock")
if command -v dockerd >/dev/null; then
  dockerd --data-root "$work/docker" --exec-root "$work/docker-exec" -H "unix://$work/docker.sock" \
    --pidfile "$work/dockerd.pid" --bridge=none --iptables=false --ip-masq=false 2>"$work/dockerd.log" &
  pids+=($!)
  wait_sock "$work/docker.sock"
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
