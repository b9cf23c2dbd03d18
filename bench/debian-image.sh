#!/usr/bin/env bash
# The shared bench's "realistic" pull image, made with berth itself:
# a debootstrap Debian bookworm minbase (from the Debian mirror; packages
# are the one outside source these machines reach) imported as the base,
# then ../shared/bench/image-ctx/Dockerfile built on it by berthd (50 MiB
# random file, a /usr/share copy, 10k small files), saved as a
# docker-archive tagged bench/pull:1 for bench/pull.sh:
#   bench/debian-image.sh && BENCH_IMAGE_TAR=/var/tmp/berth-bench/debian-multi.tar bench/pull.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${BENCH_DATA:-/var/tmp/berth-bench}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
OUT=$DATA/debian-multi.tar
[ -f "$OUT" ] && { echo "$OUT exists"; exit 0; }
cargo build --release --bins -q
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
deb=$DATA/rootfs/debian
if [ ! -f "$deb/.complete" ]; then
  rm -rf "$deb.tmp"; mkdir -p "$DATA/rootfs"
  debootstrap --variant=minbase bookworm "$deb.tmp" "$MIRROR" >"$DATA/debootstrap.log" 2>&1
  rm -rf "$deb.tmp"/var/cache/apt/*.bin "$deb.tmp"/var/cache/apt/archives/*.deb "$deb.tmp"/var/lib/apt/lists/*
  rm -rf "$deb"; mv "$deb.tmp" "$deb"; touch "$deb/.complete"
fi
source bench/lib.sh
bench_work berth-debimg
start_berthd "$BIN"
B="$BIN/berth -H unix://$work/berth.sock"
tar -C "$deb" --exclude=./.complete -c . | $B import - bench/debian:base >/dev/null
ctx=$work/ctx; mkdir -p "$ctx"
cp ../shared/bench/image-ctx/Dockerfile "$ctx/"
head -c 50M /dev/urandom >"$ctx/random.bin"
$B build -q --build-arg BASE=bench/debian:base -t bench/pull:1 "$ctx" >/dev/null
$B save -o "$OUT.tmp" bench/pull:1
mv "$OUT.tmp" "$OUT"
echo "$OUT"
