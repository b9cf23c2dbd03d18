#!/usr/bin/env bash
# Registry benchmark: berthd beside a real dockerd, same machine, same run,
# both pulling from (and pushing to) one local docker-registry on 127.0.0.1.
#   pull: cold `pull` of a >=100 MB multi-layer image (each run prepared by
#         removing the image, so every layer is downloaded and unpacked)
#   push: `push` of that image to a registry that has none of its blobs
#         (each run prepared by restarting the registry on empty storage)
#   skopeo: `skopeo copy docker://… dir:` of the same image, the time to
#         copy the compressed blobs alone (no decompression, no unpacking)
# Both daemons are driven by the docker CLI. Prints a markdown table of
# medians and ratios; raw hyperfine JSON in $OUT.
# Env: BENCH_RUNS (5), BENCH_MB (120), BENCH_LAYERS (4), BENCH_DATA, BENCH_OUT,
#      BENCH_IMAGE_TAR (a docker-archive tagged bench/pull:1 to use instead of
#      the generated image, e.g. the Debian one bench/debian-image.sh makes),
#      BENCH_DOCKERD=0 (berthd and skopeo only), BENCH_PUSH=0 (no push runs).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${BENCH_RUNS:-5}
MB=${BENCH_MB:-120}
LAYERS=${BENCH_LAYERS:-4}
DATA=${BENCH_DATA:-/var/tmp/berth-bench}
OUT=${BENCH_OUT:-bench/results}
DOCKER=/usr/local/bin/docker
mkdir -p "$DATA" "$OUT"
cargo build --release --bins -q
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
IMG=${BENCH_IMAGE_TAR:-$DATA/pull-$MB-$LAYERS.tar}
[ -f "$IMG" ] || "$BIN/berth-fixtures" big --mb "$MB" --layers "$LAYERS" --busybox --tag bench/pull:1 -o "$IMG"

work=$(mktemp -d /tmp/berth-bench-pull.XXXX)
pids=()
reg_pid=
cleanup() {
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}" $reg_pid; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  grep " $work/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$port
cat >"$work/registry.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
  delete:
    enabled: true
http:
  addr: $REG
YAML
# (re)start the registry on empty storage; the pull image is pushed by skopeo
start_registry() {
  [ -n "$reg_pid" ] && { kill "$reg_pid" 2>/dev/null || true; while kill -0 "$reg_pid" 2>/dev/null; do sleep 0.05; done; }
  rm -rf "$work/registry"
  /usr/bin/docker-registry serve "$work/registry.yml" >>"$work/registry.log" 2>&1 &
  reg_pid=$!
  echo "$reg_pid" >"$work/registry.pid"
  for _ in $(seq 100); do curl -fsS "http://$REG/v2/" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "registry did not start" >&2; return 1
}
start_registry
skopeo --insecure-policy copy -q --dest-tls-verify=false "docker-archive:$IMG" "docker://$REG/bench/pull:1"
manifest=$(skopeo inspect --tls-verify=false --raw "docker://$REG/bench/pull:1")
compressed=$(jq '[.layers[].size] | add' <<<"$manifest")
nlayers=$(jq '.layers | length' <<<"$manifest")

echo '{}' >"$work/daemon.json"
wait_sock() { for _ in $(seq 200); do DOCKER_HOST=unix://$1 $DOCKER version >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "daemon on $1 did not start" >&2; return 1; }
"$BIN/berthd" --data-root "$work/berth" -H "unix://$work/berth.sock" --pidfile "$work/berthd.pid" \
  --exec-root "$work/berth-run" --config-file "$work/daemon.json" 2>"$work/berthd.log" &
pids+=($!)
wait_sock "$work/berth.sock"
engines=("berth|$work/berth.sock")
if [ "${BENCH_DOCKERD:-1}" != 0 ] && command -v dockerd >/dev/null; then
  dockerd --data-root "$work/docker" --exec-root "$work/docker-exec" -H "unix://$work/docker.sock" \
    --pidfile "$work/dockerd.pid" --bridge=none --iptables=false --ip-masq=false 2>"$work/dockerd.log" &
  pids+=($!)
  wait_sock "$work/docker.sock"
  engines+=("docker|$work/docker.sock")
fi

declare -A PULL PUSH
for e in "${engines[@]}"; do
  name=${e%%|*}; sock=${e#*|}
  cli="env DOCKER_HOST=unix://$sock DOCKER_CONFIG=$work/cfg-$name $DOCKER"
  # a check pull first: every layer must be downloaded, none "Already exists"
  $cli pull -q "$REG/bench/pull:1" >/dev/null
  $cli rmi -f "$REG/bench/pull:1" >/dev/null
  if $cli pull "$REG/bench/pull:1" | grep -q "Already exists"; then
    echo "$name: a layer was already there on a cold pull" >&2; exit 1
  fi
  hyperfine -N --style basic --runs "$RUNS" \
    --prepare "sh -c '$cli rmi -f $REG/bench/pull:1 >/dev/null 2>&1; true'" \
    --export-json "$OUT/pull-$name.json" "$cli pull -q $REG/bench/pull:1" >/dev/null
  PULL[$name]=$(jq '.results[0].median' "$OUT/pull-$name.json")
  $cli pull -q "$REG/bench/pull:1" >/dev/null
  $cli tag "$REG/bench/pull:1" "$REG/bench/pushed:1"
done
# push: the registry restarted on storage holding only bench/pull, so every
# blob is uploaded; the daemons must not mount (dockerd mounts from repos it
# pulled from: push to a registry without them)
[ "${BENCH_PUSH:-1}" = 0 ] && engines_push=() || engines_push=("${engines[@]}")
for e in "${engines_push[@]}"; do
  name=${e%%|*}; sock=${e#*|}
  cli="env DOCKER_HOST=unix://$sock DOCKER_CONFIG=$work/cfg-$name $DOCKER"
  cat >"$work/reset.sh" <<SH
#!/bin/sh
kill \$(cat $work/registry.pid) 2>/dev/null
while kill -0 \$(cat $work/registry.pid) 2>/dev/null; do sleep 0.05; done
rm -rf $work/registry
/usr/bin/docker-registry serve $work/registry.yml >>$work/registry.log 2>&1 &
echo \$! > $work/registry.pid
for i in \$(seq 100); do curl -fsS http://$REG/v2/ >/dev/null 2>&1 && exit 0; sleep 0.05; done
exit 1
SH
  chmod +x "$work/reset.sh"
  hyperfine -N --style basic --runs "$RUNS" --prepare "$work/reset.sh" \
    --export-json "$OUT/push-$name.json" "$cli push -q $REG/bench/pushed:1" >/dev/null
  PUSH[$name]=$(jq '.results[0].median' "$OUT/push-$name.json")
done
reg_pid=$(cat "$work/registry.pid")
start_registry
skopeo --insecure-policy copy -q --dest-tls-verify=false "docker-archive:$IMG" "docker://$REG/bench/pull:1"
hyperfine -N --style basic --runs "$RUNS" --prepare "rm -rf $work/skopeo-dir" \
  --export-json "$OUT/pull-skopeo.json" \
  "skopeo --insecure-policy copy -q --src-tls-verify=false docker://$REG/bench/pull:1 dir:$work/skopeo-dir" >/dev/null
SKOPEO=$(jq '.results[0].median' "$OUT/pull-skopeo.json")

ms() { awk -v s="$1" 'BEGIN { printf "%.0f ms", s * 1000 }'; }
ratio() { [ -n "${2:-}" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", b / a }' || echo "-"; }
mb=$(awk -v b="$compressed" 'BEGIN { printf "%.1f", b / 1e6 }')
echo "| bench (median of $RUNS) | berthd | dockerd | dockerd ÷ berthd | skopeo copy to dir | berthd ÷ skopeo |"
echo "|---|---|---|---|---|---|"
echo "| cold pull, $mb MB compressed, $nlayers layers | $(ms "${PULL[berth]}") | ${PULL[docker]:+$(ms "${PULL[docker]}")} | $(ratio "${PULL[berth]}" "${PULL[docker]:-}") | $(ms "$SKOPEO") | $(awk -v a="${PULL[berth]}" -v b="$SKOPEO" 'BEGIN { printf "%.2fx", a / b }') |"
if [ -n "${PUSH[berth]:-}" ]; then
  echo "| push to an empty registry | $(ms "${PUSH[berth]}") | ${PUSH[docker]:+$(ms "${PUSH[docker]}")} | $(ratio "${PUSH[berth]}" "${PUSH[docker]:-}") | | |"
fi
