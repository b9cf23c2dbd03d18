# Shared by the bench scripts: a temporary work directory removed on exit
# (with the daemons started in it killed by PID and its mounts undone), and
# berthd / a private dockerd started in it.
DOCKER=/usr/local/bin/docker

# bench_work PREFIX: sets $work and $pids, and the EXIT trap that cleans up.
bench_work() {
  work=$(mktemp -d "/tmp/$1.XXXX")
  pids=()
  trap bench_cleanup EXIT
}
bench_cleanup() {
  # Containers first: berth's shims outlive a killed berthd by design.
  for s in "$work/berth.sock" "$work/docker.sock"; do
    [ -S "$s" ] || continue
    ids=$(DOCKER_HOST=unix://$s $DOCKER ps -aq 2>/dev/null || true)
    [ -z "$ids" ] || DOCKER_HOST=unix://$s $DOCKER rm -f $ids >/dev/null 2>&1 || true
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  grep " $work/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$work"
}
wait_sock() {
  for _ in $(seq 200); do DOCKER_HOST=unix://$1 $DOCKER version >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "daemon on $1 did not start" >&2; return 1
}
# start_berthd BIN_DIR: berthd on $work/berth.sock, in a network namespace of
# its own (its default bridge and nftables table go with it, not the machine's).
# BENCH_NET=none: no default bridge (daemon.json "bridge": "none", as dockerd's
# --bridge=none), so containers get only their loopback.
start_berthd() {
  if [ "${BENCH_NET:-bridge}" = none ]; then echo '{"bridge": "none"}'; else echo '{}'; fi >"$work/berthd.json"
  unshare --net -- "$1/berthd" --config-file "$work/berthd.json" --data-root "$work/berth" \
    -H "unix://$work/berth.sock" --exec-root "$work/run" --pidfile "$work/berthd.pid" 2>"$work/berthd.log" &
  pids+=($!)
  wait_sock "$work/berth.sock"
}
# start_dockerd: a private dockerd on $work/docker.sock, if installed. With
# BENCH_NET=bridge (the default) it has its default bridge and iptables rules,
# in a network namespace of its own as berthd; with BENCH_NET=none, no bridge.
start_dockerd() {
  command -v dockerd >/dev/null || return 1
  local net=()
  if [ "${BENCH_NET:-bridge}" = none ]; then
    net=(--bridge=none --iptables=false --ip6tables=false --ip-masq=false)
  fi
  unshare --net -- dockerd --data-root "$work/docker" --exec-root "$work/docker-exec" -H "unix://$work/docker.sock" \
    --pidfile "$work/dockerd.pid" "${net[@]}" 2>"$work/dockerd.log" &
  pids+=($!)
  wait_sock "$work/docker.sock"
}
