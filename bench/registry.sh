#!/usr/bin/env bash
# Registry benchmark: berth-registry beside the reference registry (Debian's
# docker-registry, distribution 2.8), same machine, same run, skopeo as the client.
#   push:  skopeo copy dir: -> registry of a >=100 MB image, every blob uploaded
#          (fresh repository per run, empty blob-info cache, so no cross-repo mounts)
#   pull:  skopeo copy registry -> dir: (no decompression or extraction)
#   conc:  100 concurrent GETs of the image's largest layer blob (curl)
#   mem:   VmRSS and VmHWM of each registry process after the runs
# Prints a markdown table of medians and ratios; raw hyperfine JSON in $OUT.
# Knobs: BENCH_RUNS (5), BENCH_MB (132: ~105 MB compressed), BENCH_DATA, BENCH_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${BENCH_RUNS:-5}
MB=${BENCH_MB:-132}
DATA=${BENCH_DATA:-/var/tmp/berth-bench}/registry
OUT=${BENCH_OUT:-bench/results}
REF=${REFERENCE_REGISTRY:-/usr/bin/docker-registry}
mkdir -p "$DATA" "$OUT"
for t in skopeo hyperfine curl jq unshare "$REF"; do
  command -v "$t" >/dev/null || { echo "missing $t (scripts/install-deps)" >&2; exit 1; }
done
cargo build --release -q -p berth-registry -p berth-fixtures
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release

# the image: berth-fixtures' big image, layers gzip-compressed by skopeo once
img=$DATA/image-$MB
if [ ! -f "$img/manifest.json" ]; then
  "$BIN/berth-fixtures" big --mb "$MB" --layers 4 --seed 7 -o "$DATA/big-$MB.tar" 2>/dev/null
  rm -rf "$img.tmp"
  skopeo copy -q --dest-compress "docker-archive:$DATA/big-$MB.tar" "dir:$img.tmp"
  mv "$img.tmp" "$img"
  rm -f "$DATA/big-$MB.tar"
fi
comp=$(jq '[.layers[].size]|add' "$img/manifest.json")
big_layer=$(jq -r '.layers|max_by(.size)|.digest' "$img/manifest.json")
big_size=$(jq '.layers|max_by(.size)|.size' "$img/manifest.json")

work=$(mktemp -d /tmp/berth-rbench.XXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up() { curl -fsS "http://$1/v2/" >/dev/null 2>&1; }

# the reference registry
ref_addr=127.0.0.1:$(free_port)
mkdir -p "$work/ref"
cat >"$work/ref/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/ref/storage
  delete:
    enabled: true
http:
  addr: $ref_addr
YAML
"$REF" serve "$work/ref/config.yml" >"$work/ref.log" 2>&1 &
ref_pid=$!; pids+=("$ref_pid")

# berth-registry (request logs off, as the reference's access log is off)
BERTH_REGISTRY_LOG=warn "$BIN/berth-registry" serve --addr 127.0.0.1:0 --root "$work/berth" \
  >"$work/berth.out" 2>"$work/berth.log" &
berth_pid=$!; pids+=("$berth_pid")
for _ in $(seq 100); do [ -s "$work/berth.out" ] && up "$ref_addr" && break; sleep 0.1; done
berth_addr=$(sed 's#.*://##' "$work/berth.out")
up "$berth_addr" || { cat "$work/berth.log"; exit 1; }
up "$ref_addr" || { cat "$work/ref.log"; exit 1; }

# skopeo with an empty blob-info cache (tmpfs in a private mount namespace),
# so every push uploads every blob
cat >"$work/skopeo-fresh" <<'SH'
#!/bin/sh
mkdir -p /var/lib/containers/cache
exec unshare -m --propagation private sh -c \
  'mount -t tmpfs tmpfs /var/lib/containers/cache && exec skopeo "$@"' skopeo "$@"
SH
chmod +x "$work/skopeo-fresh"
S="skopeo copy -q --src-tls-verify=false --dest-tls-verify=false"
P="$work/skopeo-fresh copy -q --src-tls-verify=false --dest-tls-verify=false"
declare -A PUSH PULL CONC RSS HWM
hf() { # name json command...
  local name=$1 json=$2; shift 2
  hyperfine -N --style basic --export-json "$json" "$@" >/dev/null 2>"$work/hf.err" || { cat "$work/hf.err" >&2; exit 1; }
  jq '.results[0].median' "$json"
}
for r in ref berth; do
  addr=$ref_addr; [ $r = berth ] && addr=$berth_addr
  $S "dir:$img" "docker://$addr/bench/big:1"
done
# interleave the registries run by run so background load hits both alike
for round in $(seq "$RUNS"); do
  for r in ref berth; do
    addr=$ref_addr; [ $r = berth ] && addr=$berth_addr
    t=$(hf push "$work/push-$r-$round.json" --runs 1 \
      "$P dir:$img docker://$addr/bench/push-$round:1")
    PUSH[$r]="${PUSH[$r]:-} $t"
    t=$(hf pull "$work/pull-$r-$round.json" --runs 1 --prepare "rm -rf $work/pull" \
      "$S docker://$addr/bench/big:1 dir:$work/pull")
    PULL[$r]="${PULL[$r]:-} $t"
    t=$(hf conc "$work/conc-$r-$round.json" --runs 1 \
      "sh -c 'seq 100 | xargs -P 100 -I{} curl -fsS -o /dev/null http://$addr/v2/bench/big/blobs/$big_layer'")
    CONC[$r]="${CONC[$r]:-} $t"
  done
done
RSS[ref]=$(awk '/^VmRSS:/{print $2}' "/proc/$ref_pid/status"); HWM[ref]=$(awk '/^VmHWM:/{print $2}' "/proc/$ref_pid/status")
RSS[berth]=$(awk '/^VmRSS:/{print $2}' "/proc/$berth_pid/status"); HWM[berth]=$(awk '/^VmHWM:/{print $2}' "/proc/$berth_pid/status")
cp "$work"/*.json "$OUT/" 2>/dev/null || true

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN{printf "%.0f", b/1e6/s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2fx", a/b}'; }
declare -A pu pl cc
for r in ref berth; do
  pu[$r]=$(echo "${PUSH[$r]}" | median); pl[$r]=$(echo "${PULL[$r]}" | median); cc[$r]=$(echo "${CONC[$r]}" | median)
done
conc_bytes=$((big_size * 100))
echo "image: $(awk -v b="$comp" 'BEGIN{printf "%.1f", b/1e6}') MB compressed in $(jq '.layers|length' "$img/manifest.json") layers; $RUNS runs each, interleaved; medians"
echo
echo "| bench | docker-registry $("$REF" --version 2>/dev/null | awk '{print $3}') | berth-registry | berth ÷ reference |"
echo "|---|---|---|---|"
echo "| skopeo push (MB/s) | $(mbps "$comp" "${pu[ref]}") | $(mbps "$comp" "${pu[berth]}") | $(ratio "${pu[ref]}" "${pu[berth]}") |"
echo "| skopeo pull (MB/s) | $(mbps "$comp" "${pl[ref]}") | $(mbps "$comp" "${pl[berth]}") | $(ratio "${pl[ref]}" "${pl[berth]}") |"
echo "| 100 concurrent GETs of a $(awk -v b="$big_size" 'BEGIN{printf "%.0f", b/1e6}') MB blob (MB/s) | $(mbps "$conc_bytes" "${cc[ref]}") | $(mbps "$conc_bytes" "${cc[berth]}") | $(ratio "${cc[ref]}" "${cc[berth]}") |"
echo "| RSS after the runs (MiB) | $((RSS[ref] / 1024)) | $((RSS[berth] / 1024)) | |"
echo "| peak RSS (MiB) | $((HWM[ref] / 1024)) | $((HWM[berth] / 1024)) | |"
