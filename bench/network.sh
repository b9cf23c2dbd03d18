#!/usr/bin/env bash
# Network benchmark. berthd runs in a network namespace made for the run
# (its "host"), so nothing here touches the machine's own network:
#   run:   what a network adds to `run --rm busybox true` (bridge vs none)
#   tcp:   TCP throughput container → host through the bridge, and host →
#          container through a port published on 127.0.0.1 (the userland
#          proxy): busybox wget of a sparse 2 GiB file from busybox httpd
#          (the container → host figure has the median `run` time taken off)
# dockerd is run beside it (in a namespace of its own, with its bridge and
# its docker-proxy) when installed.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${BENCH_RUNS:-20}
MIB=${BENCH_MIB:-2048}
DATA=${BENCH_DATA:-/var/tmp/berth-bench}
DOCKER=/usr/local/bin/docker
mkdir -p "$DATA"
cargo build --release --bins -q
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
[ -f "$DATA/busybox.tar" ] || "$BIN/berth-fixtures" busybox -o "$DATA/busybox.tar"

work=$(mktemp -d /tmp/berth-nbench.XXXX)
mkdir "$work/www"
dd if=/dev/zero of="$work/www/big" bs=1048576 count=0 seek="$MIB" 2>/dev/null
# Read once so that no engine pays for filling the page cache.
cat "$work/www/big" >/dev/null
ns_b=berth-nbench-$$
ns_d=docker-nbench-$$
pids=()
cleanup() {
  for s in berth docker; do
    [ -S "$work/$s.sock" ] && DOCKER_HOST=unix://$work/$s.sock $DOCKER rm -f $($DOCKER -H unix://$work/$s.sock ps -aq 2>/dev/null) >/dev/null 2>&1 || true
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  grep " $work/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  ip netns del "$ns_b" 2>/dev/null || true
  ip netns del "$ns_d" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
wait_sock() { for _ in $(seq 200); do DOCKER_HOST=unix://$1 $DOCKER version >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
# Seconds for `$MIB` MiB from `sender` (a shell command line) to a listener.
throughput() { awk -v s="$1" -v m="$MIB" 'BEGIN { printf "%.0f MiB/s", m / s }'; }
now() { date +%s.%N; }

ip netns add "$ns_b"; ip -n "$ns_b" link set lo up
echo '{}' >"$work/daemon.json"
nsenter --net=/run/netns/"$ns_b" -- "$BIN/berthd" --data-root "$work/berth" -H "unix://$work/berth.sock" --exec-root "$work/run" \
  --pidfile "$work/berthd.pid" --config-file "$work/daemon.json" 2>"$work/berthd.log" &
pids+=($!)
wait_sock "$work/berth.sock"
engines=("berth|$ns_b|env DOCKER_HOST=unix://$work/berth.sock $DOCKER")
if command -v dockerd >/dev/null; then
  ip netns add "$ns_d"; ip -n "$ns_d" link set lo up
  nsenter --net=/run/netns/"$ns_d" -- dockerd --data-root "$work/docker" --exec-root "$work/docker-exec" -H "unix://$work/docker.sock" \
    --pidfile "$work/dockerd.pid" 2>"$work/dockerd.log" &
  pids+=($!)
  wait_sock "$work/docker.sock"
  engines+=("docker|$ns_d|env DOCKER_HOST=unix://$work/docker.sock $DOCKER")
fi
declare -A NONE BRIDGE OUT IN
for e in "${engines[@]}"; do
  name=${e%%|*}; rest=${e#*|}; ns=${rest%%|*}; cli=${rest#*|}
  sh -c "$cli load -q -i $DATA/busybox.tar" >/dev/null
  hyperfine -N --style basic --runs "$RUNS" --warmup 2 --export-json "$work/run-$name.json" \
    "$cli run --rm --network none busybox true" "$cli run --rm busybox true" >/dev/null
  NONE[$name]=$(jq '.results[0].median' "$work/run-$name.json")
  BRIDGE[$name]=$(jq '.results[1].median' "$work/run-$name.json")
  # The kernel tears the runs' namespaces down in the background; let it
  # finish before timing transfers.
  sleep 5
  gw=$(sh -c "$cli run --rm busybox ip route" | awk '/^default/ {print $3}')
  # container → host through the bridge: the host serves a sparse file;
  # the container's run time (measured above) is taken off.
  nsenter --net=/run/netns/"$ns" -- busybox httpd -f -p 5003 -h "$work/www" >/dev/null 2>&1 &
  srv=$!
  sleep 0.3
  t0=$(now)
  sh -c "$cli run --rm busybox wget -q -O /dev/null http://$gw:5003/big"
  t1=$(now)
  kill $srv
  OUT[$name]=$(awk -v a="$t0" -v b="$t1" -v r="${BRIDGE[$name]}" 'BEGIN { print b - a - r }')
  # host → container through 127.0.0.1:5002 (the userland proxy)
  sh -c "$cli run -d --name nbench -p 127.0.0.1:5002:80 busybox sh -c 'mkdir /w && dd if=/dev/zero of=/w/big bs=1048576 count=0 seek=$MIB 2>/dev/null && cat /w/big >/dev/null && echo ready && exec httpd -f -p 80 -h /w'" >/dev/null
  for _ in $(seq 300); do sh -c "$cli logs nbench" 2>/dev/null | grep -q ready && break; sleep 0.1; done
  sleep 0.3
  t0=$(now)
  nsenter --net=/run/netns/"$ns" -- busybox wget -q -O /dev/null http://127.0.0.1:5002/big
  t1=$(now)
  IN[$name]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  sh -c "$cli rm -f nbench" >/dev/null
done
ms() { awk -v s="$1" 'BEGIN { printf "%.1f ms", s * 1000 }'; }
echo "| bench | berthd | dockerd |"
echo "|---|---|---|"
echo "| run --rm --network none busybox true (median) | $(ms "${NONE[berth]}") | ${NONE[docker]:+$(ms "${NONE[docker]}")} |"
echo "| run --rm busybox true, default bridge (median) | $(ms "${BRIDGE[berth]}") | ${BRIDGE[docker]:+$(ms "${BRIDGE[docker]}")} |"
echo "| what the bridge adds | $(ms "$(awk -v a="${BRIDGE[berth]}" -v b="${NONE[berth]}" 'BEGIN{print a-b}')") | ${BRIDGE[docker]:+$(ms "$(awk -v a="${BRIDGE[docker]}" -v b="${NONE[docker]}" 'BEGIN{print a-b}')")} |"
echo "| TCP container → host via bridge, $MIB MiB | $(throughput "${OUT[berth]}") | ${OUT[docker]:+$(throughput "${OUT[docker]}")} |"
echo "| TCP host → container via 127.0.0.1 published port, $MIB MiB | $(throughput "${IN[berth]}") | ${IN[docker]:+$(throughput "${IN[docker]}")} |"
