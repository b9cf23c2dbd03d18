#!/usr/bin/env bash
# The shared harness's engine suites (../shared/bench/run.sh) for berth beside
# dockerd and podman, in one run on this machine, and its side-by-side report.
#
#   bench/engines.sh                       # suites: idle run lifecycle exec logs conc
#   BENCH_SUITES="run exec" BENCH_RUNS=10 bench/engines.sh
#
# Engines: berth (berth's CLI), berth-docker (the docker CLI against berthd),
# docker (a private dockerd started here), podman (if installed). Every engine
# uses its default bridge network, each in a network namespace of its own
# (berthd, dockerd, and each podman suite run under `unshare --net`), as a user
# of each would; BENCH_NET=none runs them all without a container network
# (berthd "bridge": "none", dockerd --bridge=none, podman netns=none). The
# `run_rm_true_netnone` bench passes --network none in both modes.
# Everything lives in a temporary directory and is removed at the end; nothing
# here touches a system dockerd or /var/lib/docker.
set -euo pipefail
cd "$(dirname "$0")/.."
HARNESS=${BENCH_HARNESS:-$(cd ../shared/bench && pwd)}
SUITES=(${BENCH_SUITES:-idle run lifecycle exec logs conc})
cargo build --release --bins -q
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release

source bench/lib.sh
bench_work berth-ebench
export BENCH_DATA=$work/data BENCH_OUT=${BENCH_OUT:-$PWD/bench/results/engines}
mkdir -p "$BENCH_DATA" "$BENCH_OUT"
"$BIN/berth-fixtures" rootfs -o "$BENCH_DATA/busybox.tar"
start_berthd "$BIN"
export BERTH_CLI="$BIN/berth -H unix://$work/berth.sock" BERTH_SOCK=$work/berth.sock
engines=(berth berth-docker)

if start_dockerd; then
  engines+=(docker)
fi
if command -v podman >/dev/null; then
  # podman's state goes to the temporary directory as well.
  conf=$work/containers.conf
  if [ "${BENCH_NET:-bridge}" = none ]; then
    sed 's/^\[containers\]$/[containers]\nnetns = "none"/' "$HARNESS/conf/containers.conf" >"$conf"
  else
    cp "$HARNESS/conf/containers.conf" "$conf"
  fi
  printf '[storage]\ndriver = "overlay"\nrunroot = "%s"\ngraphroot = "%s"\n' \
    "$work/podman-run" "$work/podman" >"$work/storage.conf"
  export CONTAINERS_CONF=$conf CONTAINERS_STORAGE_CONF=$work/storage.conf
  engines+=(podman)
fi

for e in "${engines[@]}"; do
  case $e in
    berth) cli=$BERTH_CLI ;;
    berth-docker) cli="env DOCKER_HOST=unix://$work/berth.sock $DOCKER" ;;
    docker) cli="env DOCKER_HOST=unix://$work/docker.sock $DOCKER" ;;
    podman) cli=podman ;;
  esac
  [ "$e" = berth-docker ] || $cli import "$BENCH_DATA/busybox.tar" busybox:latest >/dev/null
done

tag=$(date +%Y%m%d-%H%M%S)-${BENCH_NET:-bridge}
for s in "${SUITES[@]}"; do
  for e in "${engines[@]}"; do
    if [ "$e" = docker ]; then export DOCKER_HOST=unix://$work/docker.sock; else unset DOCKER_HOST; fi
    ns=(); [ "$e" != podman ] || ns=(unshare --net --)
    RESULTS=$BENCH_OUT/$tag-$e.tsv "${ns[@]}" "$HARNESS/run.sh" "$e" "$s" || echo "WARNING: $e $s failed" >&2
  done
done
if command -v podman >/dev/null; then podman rm -af >/dev/null 2>&1 || true; podman system reset -f >/dev/null 2>&1 || true; fi
"$HARNESS/report.sh" "$BENCH_OUT/$tag-"*.tsv | tee "$BENCH_OUT/$tag-report.md"
