#!/usr/bin/env bash
# Reproduce docs/peers.md: the conformance kit's report on peers, installed from the package
# registries alone, next to dockvol's own drivers.
#   - rclone serve docker: Debian's rclone (apt), volumes on rclone's local backend, one
#     directory per volume (-o remote=:local:DIR/{name});
#   - buttervolume: PyPI (pip, in a separate venv), on a loop-mounted btrfs image
#     (btrfs-progs from Debian);
#   - dockvol serve --driver local and --driver block.
# Each plugin runs on a private socket under OUTDIR (never /run/docker/plugins: no engine is
# involved, and the host's engine is never touched), with --destructive (the kit kills and
# restarts it). Every kit run is bounded (its own --budget, and `timeout` around it); every
# plugin is stopped and its mounts, loop device and files removed afterwards.
#
#   tools/peer_report.sh [OUTDIR]    root on Debian; default OUTDIR /tmp/dockvol-peers
#
# Writes the raw reports (text, JSON, plugin logs) to OUTDIR and the page to docs/peers.md.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=$(realpath -m "${1:-/tmp/dockvol-peers}")
PY=${DOCKVOL_VENV:-$REPO/.venv}/bin/python
BUTTERVOLUME_VERSION=${BUTTERVOLUME_VERSION:-3.13}
KIT_TIMEOUT=${KIT_TIMEOUT:-900}   # seconds, a hard stop around each kit run

[ "$(id -u)" = 0 ] || { echo "peer_report: run as root (mounts, loop devices)" >&2; exit 2; }
[ -x "$PY" ] || { echo "peer_report: no $PY: run ./dev setup first" >&2; exit 2; }

need_apt() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The pid listening on a unix socket (SO_PEERCRED), or nothing.
listener() { "$PY" -c 'import sys
from dockvol.testing import peer_pid
try: print(peer_pid(sys.argv[1]))
except OSError: pass' "$1"; }

# Stop whatever serves socket $1 (SIGTERM, SIGKILL after 10 s), then unmount what is left
# under directory $2 (FUSE mounts of a killed rclone, for one).
stop_plugin() {
  local sock=$1 under=$2 pid i
  pid=$(listener "$sock")
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  awk -v d="$under/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do
      m=$(printf '%b' "$m")
      fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
}

wait_socket() {
  local i
  for i in $(seq 150); do [ -S "$1" ] && [ -n "$(listener "$1")" ] && return 0; sleep 0.2; done
  echo "peer_report: nothing listens on $1" >&2
  return 1
}

# run_kit NAME SOCKET RESTART_CMD [kit flags...]: the kit with its defaults and --destructive.
run_kit() {
  local name=$1 sock=$2 restart=$3
  shift 3
  echo "peer_report: conformance of $name" >&2
  local t0=$SECONDS rc=0
  timeout -k 10 "$KIT_TIMEOUT" "$PY" -m dockvol conformance --socket "$sock" \
    --destructive --restart-cmd "$restart" --json "$OUT/$name.json" --log-dir "$OUT/$name-logs" \
    "$@" >"$OUT/$name.txt" 2>"$OUT/$name.stderr" || rc=$?
  echo "{\"exit\": $rc, \"seconds\": $((SECONDS - t0)), \"flags\": $("$PY" -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@")}" \
    >"$OUT/$name.run.json"
  tail -n 3 "$OUT/$name.txt" >&2 || true
}

rm -rf "$OUT"
mkdir -p "$OUT"
need_apt rclone btrfs-progs fuse3

versions=()

# -- dockvol's own drivers -------------------------------------------------------------------
for driver in local block; do
  d=$OUT/dockvol-$driver
  mkdir -p "$d"
  cmd="$(printf '%q ' "$PY" -m dockvol serve --driver "$driver" --name "dv$driver" \
    --socket "$d/p.sock" --root "$d/root" --state "$d/state") >>$(printf '%q' "$d/serve.log") 2>&1"
  (setsid bash -c "$cmd" </dev/null &)
  wait_socket "$d/p.sock"
  run_kit "dockvol-$driver" "$d/p.sock" "$cmd"
  stop_plugin "$d/p.sock" "$d"
  # block: detach the loop devices of its images
  losetup -j "$d" 2>/dev/null | cut -d: -f1 | xargs -r -n1 losetup -d 2>/dev/null || true
done
versions+=("dockvol=$("$PY" -c 'import importlib.metadata as m; print(m.version("dockvol"))')")

# -- rclone serve docker (Debian) -----------------------------------------------------------
d=$OUT/rclone
mkdir -p "$d/base" "$d/cache" "$d/data"
cmd="$(printf '%q ' rclone serve docker --base-dir "$d/base" --socket-addr "$d/rclone.sock" \
  --cache-dir "$d/cache" --config "$d/rclone.conf" --no-spec -v) >>$(printf '%q' "$d/serve.log") 2>&1"
for pass in full skip-deadlock; do
  (setsid bash -c "$cmd" </dev/null &)
  wait_socket "$d/rclone.sock"
  extra=()
  [ "$pass" = skip-deadlock ] && extra=(--skip answers-while-mounting)
  run_kit "rclone-$pass" "$d/rclone.sock" "$cmd" -o "remote=:local:$d/data/{name}" "${extra[@]}"
  stop_plugin "$d/rclone.sock" "$d"
  rm -rf "$d/base" "$d/cache" && mkdir -p "$d/base" "$d/cache"  # a fresh plugin per pass
done
versions+=("rclone=$(dpkg-query -W -f '${Version}' rclone)")

# -- buttervolume (PyPI) on btrfs ------------------------------------------------------------
d=$OUT/buttervolume
mkdir -p "$d/mnt" "$d/run"
python3 -m venv "$d/venv"
"$d/venv/bin/pip" install -q "buttervolume==$BUTTERVOLUME_VERSION"
truncate -s 4G "$d/btrfs.img"
mkfs.btrfs -q "$d/btrfs.img" >/dev/null
mount -o loop "$d/btrfs.img" "$d/mnt"
mkdir -p "$d/mnt/volumes" "$d/mnt/snapshots" "$d/mnt/received"
# Its settings are environment variables. DOCKER_HOST points nowhere: at start buttervolume
# asks `docker plugin inspect` for a managed copy of itself, which must not reach any engine.
bv_env=(BUTTERVOLUME_VOLUMES_PATH="$d/mnt/volumes/" BUTTERVOLUME_SNAPSHOTS_PATH="$d/mnt/snapshots/"
  BUTTERVOLUME_TEST_REMOTE_PATH="$d/mnt/received/" BUTTERVOLUME_SOCKET="$d/btrfs.sock"
  BUTTERVOLUME_SCHEDULE="$d/schedule.csv" BUTTERVOLUME_RUNPATH="$d/run"
  DOCKER_HOST=unix:///nonexistent/docker.sock)
cmd="$(printf '%q ' env "${bv_env[@]}" "$d/venv/bin/buttervolume" run) >>$(printf '%q' "$d/serve.log") 2>&1"
(setsid bash -c "$cmd" </dev/null &)
wait_socket "$d/btrfs.sock"
run_kit buttervolume "$d/btrfs.sock" "$cmd"
stop_plugin "$d/btrfs.sock" "$d/mnt/volumes"
versions+=("buttervolume=$("$d/venv/bin/pip" show buttervolume | awk '/^Version/ {print $2}')")
umount -l "$d/mnt" || true
rm -f "$d/btrfs.img"
rm -rf "$d/venv"

printf '%s\n' "${versions[@]}" >"$OUT/versions.txt"
"$PY" tools/peer_report.py "$OUT" >docs/peers.md
echo "peer_report: wrote docs/peers.md (raw reports in $OUT)" >&2
