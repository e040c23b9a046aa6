#!/usr/bin/env bash
# The userlb container lab: prepare the images, bring the lab up, demo, down.
#
#   docker/lab.sh prepare        base image (debootstrap, cached) + wheels + `compose build`
#   docker/lab.sh up             prepare, then start the lab (compose up -d) and wait until ready
#   docker/lab.sh demo           traffic from the client, distribution vs `userlb simulate`,
#                                `userlb adm -L -n --stats` from the director
#   docker/lab.sh down           stop and remove the lab's containers and networks
#   docker/lab.sh run-demo       up + demo + down (down also after a failure): `make docker-demo`
#   docker/lab.sh deps           apt-get install docker.io docker-compose debootstrap (if missing)
#   docker/lab.sh daemon-start DIR | daemon-stop DIR
#                                a private Docker engine (own containerd, data root, exec root,
#                                pid file, socket DIR/docker.sock, no default bridge, no iptables
#                                rules, no ip_forward change) -- used by the test and by
#                                run-demo when no engine is reachable
#
# Environment (all optional):
#   DOCKER_HOST            the engine to use (docker-compose and docker read it)
#   ULB_BASE               base image of the Dockerfile (default userlb-base:bookworm, made here
#                          with debootstrap; a registry image such as debian:bookworm or
#                          python:3.11-slim works too and skips debootstrap)
#   ULB_IMAGE              the lab image's name (default userlb-lab:local)
#   ULB_BRIDGE             prefix of the lab's two host bridges (default ulb: ulb-front, ulb-back)
#   ULB_DIRECTORS          1 (default) or 2: a second director and a second client going
#                          through it (docker-compose.two.yml)
#   COMPOSE_PROJECT_NAME   compose project name (default userlb)
#   ULB_CACHE              where the base tarball is cached (default REPO/.cache/docker)
#   ULB_MIRROR             Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   ULB_TMP                parent of a private engine's directory (default /tmp; keep it short)
#   ULB_PROGRESS_EVERY     seconds between debootstrap's progress lines within a phase (default 10)
#   PYTHON                 host Python that builds the wheels (default REPO/.venv/bin/python or
#                          python3); its X.Y must be the image's (3.11 for bookworm)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SUITE=bookworm
INCLUDE=python3,python3-venv,iproute2,procps
MIRROR=${ULB_MIRROR:-http://deb.debian.org/debian}
CACHE=${ULB_CACHE:-$REPO/.cache/docker}
export ULB_BASE=${ULB_BASE:-userlb-base:bookworm}
export ULB_IMAGE=${ULB_IMAGE:-userlb-lab:local}
export ULB_BRIDGE=${ULB_BRIDGE:-ulb}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-userlb}
# docker-compose v1: build with the engine API (no docker CLI, no BuildKit needed)
export COMPOSE_DOCKER_CLI_BUILD=${COMPOSE_DOCKER_CLI_BUILD:-0} DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}
COMPOSE_FILE_PATH=$HERE/docker-compose.yml
ULB_DIRECTORS=${ULB_DIRECTORS:-1}
case "$ULB_DIRECTORS" in
    1) COMPOSE_FILES=(-f "$COMPOSE_FILE_PATH"); SERVICES="director s1 s2 s3 client" ;;
    2) COMPOSE_FILES=(-f "$COMPOSE_FILE_PATH" -f "$HERE/docker-compose.two.yml")
       SERVICES="director director2 s1 s2 s3 client client2" ;;
    *) echo "lab.sh: ULB_DIRECTORS must be 1 or 2" >&2; exit 2 ;;
esac
WHEELS=$HERE/wheels
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
# Debian's docker client matches Debian's engine; another client (e.g. in /usr/local/bin) may not
if [ -z "${DOCKER:-}" ]; then
    if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=docker; fi
fi

say() { echo "lab.sh: $*" >&2; }
die() { say "$*"; exit 1; }

compose() {
    if command -v docker-compose >/dev/null 2>&1; then
        docker-compose "${COMPOSE_FILES[@]}" "$@"
    else
        "$DOCKER" compose "${COMPOSE_FILES[@]}" "$@"
    fi
}

# ------------------------------------------------------------------ packages
cmd_deps() {
    local missing="" p
    for p in docker.io docker-compose debootstrap; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        [ "$(id -u)" = 0 ] || die "missing Debian packages:$missing (run as root to install them)"
        say "installing Debian packages:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
}

# --------------------------------------------------------------- base image
base_tar() {
    local key
    key=$(printf '%s %s %s\n' "$SUITE" "$INCLUDE" "$MIRROR" | sha256sum | cut -c1-12)
    echo "$CACHE/base-$SUITE-$key.tar"
}

# debootstrap's output (stdin) -> LOG, and a progress line on stderr for each
# phase (downloading, extracting, unpacking, configuring) and, within a long
# phase, one every ULB_PROGRESS_EVERY seconds (default 10) with its current step
debootstrap_progress() {
    local log=$1 start=$SECONDS last=$SECONDS phase="" now line
    : > "$log"
    while IFS= read -r line; do
        printf '%s\n' "$line" >> "$log"
        case "$line" in
            "I: Retrieving "*|"I: Validating "*|"I: Checking "*|"I: Valid "*|"I: Resolving "*|"I: Found "*)
                now="downloading and checking packages" ;;
            "I: Chosen extractor"*|"I: Extracting "*) now="extracting packages" ;;
            "I: Installing "*|"I: Unpacking "*) now="unpacking packages" ;;
            "I: Configuring "*) now="configuring packages" ;;
            *) continue ;;
        esac
        if [ "$now" != "$phase" ]; then
            say "  debootstrap ($((SECONDS - start)) s): $now"
        elif [ $((SECONDS - last)) -ge "${ULB_PROGRESS_EVERY:-10}" ]; then
            say "  debootstrap ($((SECONDS - start)) s): $now: ${line#I: }"
        else
            continue
        fi
        phase=$now last=$SECONDS
    done
}

make_base_tar() {
    local tar=$1 tmp
    command -v debootstrap >/dev/null || die "debootstrap missing: docker/lab.sh deps (or apt-get install debootstrap)"
    mkdir -p "$CACHE"
    tmp=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    # shellcheck disable=SC2064
    trap "umount -R '$tmp/root/proc' '$tmp/root/sys' 2>/dev/null || true; rm -rf '$tmp'" EXIT
    say "building the base image with debootstrap --variant=minbase --include=$INCLUDE $SUITE:"
    say "  about 40 MB from $MIRROR, usually 45 s to 2 minutes; made once, then cached in $tar"
    local start=$SECONDS
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp/root" "$MIRROR" 2>&1 |
        debootstrap_progress "$tmp/debootstrap.log" ||
        { tail -20 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
    say "debootstrap done in $((SECONDS - start)) s; packing the root file system (about 180 MB)"
    rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"* \
           "$tmp/root/var/log/"*.log "$tmp/root/dev/"* 2>/dev/null || true
    tar --numeric-owner -C "$tmp/root" -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
    rm -rf "$tmp"
    trap - EXIT
}

cmd_base() {
    if [ "$ULB_BASE" != "userlb-base:bookworm" ]; then
        say "base image $ULB_BASE (given by ULB_BASE): not made here"
        return 0
    fi
    local tar key have
    tar=$(base_tar)
    key=$(basename "$tar" .tar)
    [ -s "$tar" ] || make_base_tar "$tar"
    have=$("$DOCKER" image inspect -f '{{ index .Config.Labels "org.userlb.base" }}' "$ULB_BASE" 2>/dev/null || true)
    if [ "$have" != "$key" ]; then
        say "docker import $tar -> $ULB_BASE"
        "$DOCKER" import -c "LABEL org.userlb.base=$key" -c 'ENV LANG=C.UTF-8' \
            -c 'CMD ["/bin/bash"]' "$tar" "$ULB_BASE" >/dev/null
    fi
}

# ------------------------------------------------------------------- wheels
# wheels/deps: the dependencies (built once per pyproject.toml), wheels/userlb: userlb itself
# (rebuilt every time: cheap, pure Python).  Both are installed with --no-index in the image.
cmd_wheels() {
    local pyver key stamp
    pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [ "$ULB_BASE" = "userlb-base:bookworm" ] && [ "$pyver" != 3.11 ]; then
        die "$PYTHON is Python $pyver; bookworm's is 3.11 (the wheels must match): set PYTHON"
    fi
    key=$( (cat "$REPO/pyproject.toml"; echo "$pyver") | sha256sum | cut -c1-12)
    stamp=$WHEELS/deps/.built-$key
    if [ ! -e "$stamp" ]; then
        say "pip wheel: the dependencies of userlb (Python $pyver, once per pyproject.toml)"
        rm -rf "$WHEELS/deps"
        mkdir -p "$WHEELS/deps"
        "$PYTHON" -m pip wheel -q -w "$WHEELS/deps" "$REPO"
        rm -f "$WHEELS/deps/"userlb-*.whl
        touch "$stamp"
    fi
    # userlb itself: rebuilt when its sources change
    key=$(cd "$REPO" && find userlb pyproject.toml -name '*.py' -o -name pyproject.toml |
          LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)
    stamp=$WHEELS/userlb/.src-$key
    [ -e "$stamp" ] && return 0
    rm -rf "$WHEELS/userlb"
    mkdir -p "$WHEELS/userlb"
    "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS/userlb" "$REPO" 2>/dev/null ||
        "$PYTHON" -m pip wheel -q --no-deps -w "$WHEELS/userlb" "$REPO"
    touch "$stamp"
}

cmd_prepare() {
    cmd_base
    cmd_wheels
    say "compose build ($ULB_IMAGE from $ULB_BASE)"
    compose build -q director
}

# ---------------------------------------------------------------------- lab
wait_ready() {
    local deadline=$((SECONDS + ${1:-60})) svc pending
    while :; do
        pending=""
        for svc in $SERVICES; do
            compose logs --no-color "$svc" 2>/dev/null | grep -q "ready" || pending="$pending $svc"
        done
        [ -z "$pending" ] && return 0
        if [ $SECONDS -ge $deadline ]; then
            compose ps >&2 || true
            compose logs --no-color --tail 20 >&2 || true
            die "not ready after ${1:-60}s:$pending"
        fi
        sleep 0.5
    done
}

cmd_up() {
    cmd_prepare
    say "compose up (project $COMPOSE_PROJECT_NAME)"
    compose up -d --no-build
    wait_ready 90
    say "lab up ($ULB_DIRECTORS director(s)): docker/lab.sh demo; docker/lab.sh down"
}

cmd_demo() {
    local rc=0 n c d
    for n in $(seq "$ULB_DIRECTORS"); do
        c=client; d=director
        [ "$n" = 1 ] || { c=client$n; d=director$n; }
        compose exec -T "$c" python3 /opt/userlb-lab/lab.py demo "$@" || rc=$?
        echo
        echo "$d: userlb adm -L -n --stats"
        if ! compose exec -T "$d" userlb adm -L -n --stats; then
            echo "(userlb adm is not available in this build; the director's own listing, SIGUSR1:)"
            compose exec -T "$d" sh -c 'kill -USR1 1 2>/dev/null; sleep 1' || true
            compose logs --no-color --tail 30 "$d" || true
        fi
        echo
    done
    return $rc
}

cmd_down() {
    compose down --remove-orphans --timeout 5
}

# ----------------------------------------------------------- private engine
# DIR must be short (unix socket paths): e.g. /tmp/ulbd-XXXXXX
cmd_daemon_start() {
    local d=${1:?DIR} i
    command -v dockerd >/dev/null && command -v containerd >/dev/null ||
        die "dockerd/containerd missing: docker/lab.sh deps"
    mkdir -p "$d"
    d=$(cd "$d" && pwd)
    [ ! -e "$d/docker.sock" ] || die "$d/docker.sock exists: is an engine running there?"
    mkdir -p "$d/data" "$d/exec" "$d/ctd-root" "$d/ctd-state"
    # containerd's shims put their sockets in /run/containerd/s whatever the config says:
    # remember whether that directory is ours to remove (when empty) afterwards
    [ -e /run/containerd ] || touch "$d/made-run-containerd"
    cat > "$d/containerd.toml" <<EOF
version = 2
root = "$d/ctd-root"
state = "$d/ctd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
EOF
    # no /etc/docker/daemon.json, and the engine's identity key inside DIR (not /etc/docker)
    printf '{"deprecated-key-path": "%s/key.json"}\n' "$d" > "$d/daemon.json"
    setsid containerd --config "$d/containerd.toml" > "$d/containerd.log" 2>&1 < /dev/null &
    echo $! > "$d/containerd.pid"
    for i in $(seq 100); do [ -S "$d/containerd.sock" ] && break; sleep 0.1; done
    [ -S "$d/containerd.sock" ] || { tail "$d/containerd.log" >&2; die "containerd did not start"; }
    setsid dockerd --config-file "$d/daemon.json" \
        --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/dockerd.pid" \
        -H "unix://$d/docker.sock" --containerd "$d/containerd.sock" \
        --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
        --userland-proxy=false --log-level=warn > "$d/dockerd.log" 2>&1 < /dev/null &
    echo $! > "$d/dockerd.launch.pid"
    for i in $(seq 150); do
        DOCKER_HOST="unix://$d/docker.sock" "$DOCKER" version >/dev/null 2>&1 && break
        sleep 0.2
    done
    DOCKER_HOST="unix://$d/docker.sock" "$DOCKER" version >/dev/null 2>&1 ||
        { tail "$d/dockerd.log" >&2; die "dockerd did not start (log: $d/dockerd.log)"; }
    echo "unix://$d/docker.sock"
}

# kill PID (TERM, then KILL after a while) if its command line contains WORD
kill_ours() {
    local pid=$1 word=$2 i
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 0
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$word" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do [ -d "/proc/$pid" ] || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

cmd_daemon_stop() {
    local d=${1:?DIR} host pid m
    [ -d "$d" ] || return 0
    d=$(cd "$d" && pwd)
    host="unix://$d/docker.sock"
    if [ -S "$d/docker.sock" ] && DOCKER_HOST=$host "$DOCKER" version >/dev/null 2>&1; then
        # containers and networks first: the engine removes their bridges and veths
        local ids
        ids=$(DOCKER_HOST=$host "$DOCKER" ps -aq)
        [ -z "$ids" ] || DOCKER_HOST=$host "$DOCKER" rm -f $ids >/dev/null 2>&1 || true
        DOCKER_HOST=$host "$DOCKER" network prune -f >/dev/null 2>&1 || true
    fi
    kill_ours "$(cat "$d/dockerd.pid" 2>/dev/null || cat "$d/dockerd.launch.pid" 2>/dev/null || true)" "$d"
    # containers the engine did not remove (it did not answer): through runc directly
    local rr=$d/exec/runtime-runc/moby id
    if [ -d "$rr" ] && command -v runc >/dev/null; then
        for id in $(runc --root "$rr" list -q 2>/dev/null); do
            runc --root "$rr" delete -f "$id" >/dev/null 2>&1 || true
        done
    fi
    # containerd shims of this containerd (there should be none left), then containerd
    for pid in $(pgrep -f "containerd-shim.*$d/containerd.sock" || true); do kill_ours "$pid" "$d/containerd.sock"; done
    kill_ours "$(cat "$d/containerd.pid" 2>/dev/null || true)" "$d"
    # anything still mounted below DIR (overlay layers, netns and shm mounts)
    for m in $(awk -v d="$d" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    if [ -e "$d/made-run-containerd" ]; then
        rmdir /run/containerd/s 2>/dev/null || true
        rmdir /run/containerd 2>/dev/null || true
    fi
    rm -rf "$d"
}

# -------------------------------------------------------------------- demo
engine_ok() { "$DOCKER" version >/dev/null 2>&1; }

# one container lab at a time on this host (its prefixes are fixed): the test takes it too
LOCK=${ULB_LOCK:-/run/lock/userlb-docker-lab.lock}
take_lock() {
    mkdir -p "$(dirname "$LOCK")"
    exec 9>>"$LOCK"
    flock -w 900 9 || die "another container lab holds $LOCK"
}

cmd_run_demo() {
    cmd_deps
    take_lock
    local priv="" rc=0
    if ! engine_ok; then
        priv=$(mktemp -d "${ULB_TMP:-/tmp}/ulbd-XXXXXX")
        say "no Docker engine reachable: starting a private one in $priv"
        DOCKER_HOST=$(cmd_daemon_start "$priv") || { cmd_daemon_stop "$priv"; exit 1; }
        export DOCKER_HOST
    fi
    # shellcheck disable=SC2064
    trap "teardown '$priv'" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    cmd_up
    cmd_demo "$@" || rc=$?
    trap - EXIT
    teardown "$priv"
    return $rc
}

teardown() {
    local priv=$1 br
    say "tearing down"
    cmd_down >/dev/null 2>&1 || true
    if [ -n "$priv" ]; then
        cmd_daemon_stop "$priv"
        # the private engine is gone: bridges still named like the lab's are leftovers
        for br in "$ULB_BRIDGE-front" "$ULB_BRIDGE-back"; do
            ip link show "$br" >/dev/null 2>&1 && ip link del "$br" && say "removed leftover bridge $br"
        done
    fi
    return 0
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case "$cmd" in
        deps) cmd_deps ;;
        base) cmd_base ;;
        wheels) cmd_wheels ;;
        prepare) cmd_prepare ;;
        up) cmd_up ;;
        demo) cmd_demo "$@" ;;
        down) cmd_down ;;
        run-demo) cmd_run_demo "$@" ;;
        daemon-start) cmd_daemon_start "$@" ;;
        daemon-stop) cmd_daemon_stop "$@" ;;
        *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2 ;;
    esac
}

main "$@"
