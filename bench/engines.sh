#!/usr/bin/env bash
# The shared harness's engine suites (../shared/bench/run.sh) for berth beside
# dockerd and podman, in one run on this machine, and its side-by-side report.
#
#   bench/engines.sh                       # suites: idle run lifecycle exec logs conc
#   BENCH_SUITES="run exec" BENCH_RUNS=10 bench/engines.sh
#
# Engines: berth (berth's CLI), berth-docker (the docker CLI against berthd),
# docker (a private dockerd started here), podman (if installed). Every engine
# runs without a container network (dockerd --bridge=none, podman netns=none,
# berth's default until its networking lands), so `run` compares like with like.
# Everything lives in a temporary directory and is removed at the end; nothing
# here touches a system dockerd or /var/lib/docker.
set -euo pipefail
cd "$(dirname "$0")/.."
HARNESS=${BENCH_HARNESS:-$(cd ../shared/bench && pwd)}
SUITES=(${BENCH_SUITES:-idle run lifecycle exec logs conc})
DOCKER_CLI=/usr/local/bin/docker
cargo build --release --bins -q
BIN=$PWD/target/release

work=$(mktemp -d /tmp/berth-ebench.XXXX)
export BENCH_DATA=$work/data BENCH_OUT=${BENCH_OUT:-$PWD/bench/results/engines}
mkdir -p "$BENCH_DATA" "$BENCH_OUT"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  grep " $work/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
wait_sock() { for _ in $(seq 200); do DOCKER_HOST=unix://$1 $DOCKER_CLI version >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

"$BIN/berth-fixtures" rootfs -o "$BENCH_DATA/busybox.tar"
"$BIN/berthd" --data-root "$work/berth" -H "unix://$work/berth.sock" --exec-root "$work/run" \
  --pidfile "$work/berthd.pid" 2>"$work/berthd.log" &
pids+=($!)
wait_sock "$work/berth.sock"
export BERTH_CLI="$BIN/berth -H unix://$work/berth.sock" BERTH_SOCK=$work/berth.sock
engines=(berth berth-docker)

if command -v dockerd >/dev/null; then
  dockerd --data-root "$work/docker" --exec-root "$work/docker-exec" -H "unix://$work/docker.sock" \
    --pidfile "$work/dockerd.pid" --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    2>"$work/dockerd.log" &
  pids+=($!)
  wait_sock "$work/docker.sock"
  engines+=(docker)
fi
if command -v podman >/dev/null; then
  # podman's state goes to the temporary directory as well.
  conf=$work/containers.conf
  { cat "$HARNESS/conf/containers.conf"; } | sed 's/^\[containers\]$/[containers]\nnetns = "none"/' >"$conf"
  printf '[storage]\ndriver = "overlay"\nrunroot = "%s"\ngraphroot = "%s"\n' \
    "$work/podman-run" "$work/podman" >"$work/storage.conf"
  export CONTAINERS_CONF=$conf CONTAINERS_STORAGE_CONF=$work/storage.conf
  engines+=(podman)
fi

for e in "${engines[@]}"; do
  case $e in
    berth) cli=$BERTH_CLI ;;
    berth-docker) cli="env DOCKER_HOST=unix://$work/berth.sock $DOCKER_CLI" ;;
    docker) cli="env DOCKER_HOST=unix://$work/docker.sock $DOCKER_CLI" ;;
    podman) cli=podman ;;
  esac
  [ "$e" = berth-docker ] || $cli import "$BENCH_DATA/busybox.tar" busybox:latest >/dev/null
done

tag=$(date +%Y%m%d-%H%M%S)
for s in "${SUITES[@]}"; do
  for e in "${engines[@]}"; do
    if [ "$e" = docker ]; then export DOCKER_HOST=unix://$work/docker.sock; else unset DOCKER_HOST; fi
    RESULTS=$BENCH_OUT/$tag-$e.tsv "$HARNESS/run.sh" "$e" "$s" || echo "WARNING: $e $s failed" >&2
  done
done
if command -v podman >/dev/null; then podman rm -af >/dev/null 2>&1 || true; podman system reset -f >/dev/null 2>&1 || true; fi
"$HARNESS/report.sh" "$BENCH_OUT/$tag-"*.tsv | tee "$BENCH_OUT/$tag-report.md"
