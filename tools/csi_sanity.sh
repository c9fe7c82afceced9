#!/usr/bin/env bash
# Run csi-sanity (kubernetes-csi/csi-test, the CSI field's own conformance suite) against
# dockvol's CSI front end, one shipped driver at a time, and print its counts per driver.
#
#   tools/csi_sanity.sh [--src CSI_TEST_CHECKOUT] [DRIVER...] [-- EXTRA_CSI_SANITY_ARGS...]
#
# DRIVER: local, shared, block (default: all three). block needs root (loop devices).
#
# csi-sanity is not part of the repository nor of CI (.ci/run): its source and binary live
# outside it, in $CSI_SANITY_CACHE (default /var/cache/dockvol/csi-sanity). When the binary is
# missing it is built from a checkout of kubernetes-csi/csi-test at tag v5.2.0 (the newest that
# Debian's Go 1.19 builds), given by --src or $CSI_SANITY_SRC. Release tags commit a complete
# vendor/ (CSI spec v1.9.0 included), so the build needs no module proxy:
#   git -C csi-test archive v5.2.0 | tar -x -C /some/dir   # or any checkout of the tag
#   apt-get install -y golang-go                           # Go 1.19 on Debian 12
#   CSI_SANITY_VERSION=v5.2.0 tools/csi_sanity.sh --src /some/dir   # version: -version's text
#
# Each driver gets a private temp directory (volumes root, state, Docker socket, CSI socket,
# csi-sanity's staging and target paths), torn down afterwards. Logs and JUnit reports are kept
# in $CSI_SANITY_OUT (default $CSI_SANITY_CACHE/results). Exit status: 0 when no spec failed.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${CSI_SANITY_CACHE:-/var/cache/dockvol/csi-sanity}"
BIN="${CSI_SANITY_BIN:-$CACHE/csi-sanity}"
OUT="${CSI_SANITY_OUT:-$CACHE/results}"
SRC="${CSI_SANITY_SRC:-}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
# The plugin under test: this checkout's dockvol, whatever is installed elsewhere.
DOCKVOL=("$PYTHON" -m dockvol)
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"

drivers=()
extra=()
while (($#)); do
    case "$1" in
        --src) SRC="$2"; shift 2 ;;
        --src=*) SRC="${1#--src=}"; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        local|shared|block) drivers+=("$1"); shift ;;
        *) echo "csi_sanity: unknown argument '$1' (drivers: local shared block; --src DIR)" >&2
           exit 2 ;;
    esac
done
((${#drivers[@]})) || drivers=(local shared block)

# --- build csi-sanity once, out of the repository ------------------------------------------
build() {
    if [[ -z "$SRC" || ! -f "$SRC/cmd/csi-sanity/main.go" ]]; then
        echo "csi_sanity: no csi-sanity binary at $BIN; give a checkout of kubernetes-csi/csi-test" \
             "(tag v5.2.0) with --src DIR or CSI_SANITY_SRC=DIR" >&2
        exit 2
    fi
    if [[ ! -d "$SRC/vendor/github.com/container-storage-interface/spec" ]]; then
        echo "csi_sanity: $SRC has no vendor/ with the CSI spec: use a release tag (v5.2.0)" >&2
        exit 2
    fi
    command -v go >/dev/null || { echo "csi_sanity: no Go: apt-get install -y golang-go" >&2; exit 2; }
    mkdir -p "$CACHE"
    # The tag it reports with -version: from git, or $CSI_SANITY_VERSION for an exported tree.
    local version="${CSI_SANITY_VERSION:-$(git -C "$SRC" describe --tags 2>/dev/null || echo unknown)}"
    echo "csi_sanity: building csi-sanity $version from $SRC ($(go version))"
    # Vendored modules only: no proxy, no toolchain download; caches kept beside the binary.
    (cd "$SRC" && env GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local \
        GOCACHE="$CACHE/gocache" GOPATH="$CACHE/gopath" \
        go build -mod=vendor -ldflags "-X main.VERSION=$version" -o "$BIN" ./cmd/csi-sanity)
}
[[ -x "$BIN" ]] || build

mkdir -p "$OUT"
declare -A summary=()
status=0

# Undo whatever a run left behind under $1: mounts (deepest first), then loop devices.
cleanup_dir() {
    local base="$1" p dev back
    while read -r p; do umount -l "$p" 2>/dev/null || true; done < <(
        awk -v b="$base/" 'index($5, b) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    if command -v losetup >/dev/null; then
        while read -r dev back; do
            [[ "$back" == "$base/"* ]] && losetup -d "$dev" 2>/dev/null || true
        done < <(losetup -l -n -O NAME,BACK-FILE 2>/dev/null)
    fi
    rm -rf "$base"
}

# Send SIGTERM and wait (bounded) for the plugin to exit; SIGKILL if it does not.
stop_plugin() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 200; i++)); do  # up to 20 s
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    echo "csi_sanity: plugin $pid did not stop in 20 s: killed" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

run_driver() {
    local driver="$1" tmp pid junit log plog i
    if [[ "$driver" == block && "$(id -u)" != 0 ]]; then
        echo "csi_sanity: block needs root (loop devices, mkfs, mount): not run" >&2
        summary[$driver]="not run (needs root)"
        status=1
        return
    fi
    # Short path: unix socket paths are limited to 107 bytes.
    tmp="$(mktemp -d /tmp/dvsan.XXXXXX)"
    mkdir -p "$tmp/root" "$tmp/state" "$tmp/mnt"
    junit="$OUT/junit-$driver.xml"
    log="$OUT/csi-sanity-$driver.log"
    plog="$OUT/plugin-$driver.log"
    rm -f "$junit"
    # shared: --root stands for the filesystem every node mounts; here a plain directory, which
    # the driver requires to exist already. The registry stays the default sqlite: in --state.
    "${DOCKVOL[@]}" serve --driver "$driver" --name "dockvol-sanity-$driver" \
        --socket "$tmp/p.sock" --root "$tmp/root" --state "$tmp/state" \
        --csi-endpoint "unix://$tmp/csi.sock" --log-level debug >"$plog" 2>&1 &
    pid=$!
    # Ready when the CSI socket exists (it is bound after recovery); bounded wait.
    for ((i = 0; i < 300; i++)); do  # up to 30 s
        [[ -S "$tmp/csi.sock" ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ ! -S "$tmp/csi.sock" ]]; then
        echo "csi_sanity: $driver: the plugin did not serve CSI; its log ($plog):" >&2
        tail -n 20 "$plog" >&2
        stop_plugin "$pid"
        cleanup_dir "$tmp"
        summary[$driver]="not run (plugin did not start)"
        status=1
        return
    fi
    echo "csi_sanity: $driver: running csi-sanity (log: $log)"
    "$BIN" -csi.endpoint "unix://$tmp/csi.sock" \
        -csi.stagingdir "$tmp/mnt/staging" -csi.mountdir "$tmp/mnt/target" \
        -ginkgo.junit-report "$junit" -ginkgo.v -ginkgo.no-color \
        ${extra[@]+"${extra[@]}"} >"$log" 2>&1 || true
    stop_plugin "$pid"
    cleanup_dir "$tmp"
    if [[ ! -f "$junit" ]]; then
        echo "csi_sanity: $driver: csi-sanity wrote no report; tail of $log:" >&2
        tail -n 20 "$log" >&2
        summary[$driver]="no report"
        status=1
        return
    fi
    # Counts and each failure's name with the first line of its reason, from the JUnit report.
    local counts
    counts="$("$PYTHON" - "$junit" <<'EOF'
import sys
import xml.etree.ElementTree as ET

cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
passed = failed = skipped = pending = 0
failures = []
for case in cases:
    name = case.get("name", "")
    if name.startswith("[BeforeSuite]") or name.startswith("[AfterSuite]"):
        if case.find("failure") is None and case.find("error") is None:
            continue  # suite set-up that passed is not a spec
    bad = case.find("failure")
    if bad is None:
        bad = case.find("error")
    if bad is not None:
        failed += 1
        lines = [x.strip() for x in (bad.get("message") or bad.text or "").splitlines()]
        lines = [x for x in lines if x] or ["(no message)"]
        # csi-sanity's own words first, then the plugin's gRPC error if one caused it.
        rpc = next((x for x in lines if x.startswith("rpc error:")), None)
        reason = lines[0] + (f" -- {rpc}" if rpc and rpc != lines[0] else "")
        failures.append(f"  FAIL {name}\n       {reason}")
    elif case.get("status") == "pending":
        pending += 1  # marked pending in csi-sanity itself: never run, whatever the plugin
    elif case.find("skipped") is not None or case.get("status") == "skipped":
        skipped += 1  # a capability the plugin does not advertise
    else:
        passed += 1
print(f"passed={passed} failed={failed} skipped={skipped} pending={pending}")
for f in failures:
    print(f)
EOF
)"
    echo "$counts" | sed -n '2,$p'
    summary[$driver]="$(echo "$counts" | head -n 1)"
    [[ "${summary[$driver]}" == *"failed=0 "* ]] || status=1
}

for d in "${drivers[@]}"; do run_driver "$d"; done

echo
echo "csi-sanity $("$BIN" -version 2>/dev/null | head -n 1 || true) against dockvol's CSI front end:"
for d in "${drivers[@]}"; do printf '  %-7s %s\n' "$d" "${summary[$d]}"; done
echo "(JUnit reports and logs: $OUT)"
exit "$status"
