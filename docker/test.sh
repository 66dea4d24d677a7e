#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The docker-compose cycle of docs/docker.md, for real, on a Debian 12
# machine as root, with no access to a container registry:
#  1. installs Debian's docker.io and docker-compose when missing;
#  2. uses the Docker daemon that runs, or starts one of its own: data, exec
#     root, socket and pidfile in a temporary directory, no iptables rules,
#     no default bridge, no change to IP forwarding; stopped at the end;
#  3. gets debian:bookworm-slim: already there, pulled, or else made here
#     with debootstrap from the mirror apt uses, and `docker import`;
#  4. builds docker/Dockerfile (from the files git knows, build trees left
#     out), whose image is Debian with zpipe's packages installed, and checks
#     them there: zpipe --version, zpipe run, python3's zpipe_worker (when the
#     sources have it), and, in an image made from it with libzpipe-dev and
#     a compiler added by apt-get, pkg-config and tests/consumer built with
#     find_package(zpipe) and pkg-config; validates the compose files
#     (with the CURVE and Prometheus variants) and docker/prometheus.yml
#     (with promtool, when there);
#  5. run 1: `docker-compose up --scale worker=3 --exit-code-from
#     coordinator`: every item comes out exactly once, from several workers;
#  6. run 2: the coordinator's and a worker's metrics are read while the run
#     goes; then a worker container is killed mid-run: nothing is lost;
#  7. run 3: the CURVE variant (compose.curve.yml) with `zpipe keygen`
#     keys: a worker with a key not on the allow-list is refused;
#  8. run 4: two pools (compose.pools.yml), a coordinator without the
#     workers' plugin, two remote stages: every item goes through one
#     container of each pool, exactly once, though a container of one pool
#     is killed mid-run;
#  9. run 5: examples/python/compose.yml, a stage served by Python workers
#     (skipped, saying so, while the image has no zpipe_worker);
# 10. run 6: a durable run (compose.durable.yml: --checkpoint on a volume,
#     restart: on-failure): the coordinator is SIGKILLed mid-run, the engine
#     starts it again, it resumes and exits 0; the output file on the volume
#     holds every output exactly once, STATE says done, and the container,
#     started once more, redoes nothing;
# then removes what it made: containers, networks, images, the daemon it
# started, temporary files. Traffic between containers stays on a bridge
# of this machine; only the image build reaches the Debian mirror.
# Idempotent; called by scripts/test.sh. Environment: ZPIPE_DOCKER_ITEMS
# (run 1's items, default 6000), ZPIPE_DOCKER_KEEP=1 keeps the temporary
# directory (logs, outputs) for a post-mortem, ZPIPE_DOCKER_ONLY=durable
# builds the image and does run 6 alone (no libzpipe-dev image, no runs 1-5).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly base=debian:bookworm-slim
readonly workers=3
readonly items1=${ZPIPE_DOCKER_ITEMS:-6000}
readonly items2=3000 # slow_square: 10 ms each, 3 at once: >= 10 s
readonly items3=2000
readonly items4=8000 # host_tag: 2 ms each, 2 at once per pool: >= 8 s
readonly items6=3000 # slow_square: 10 ms each, 3 at once: >= 10 s
readonly only=${ZPIPE_DOCKER_ONLY:-}
case $only in
    "" | durable) ;;
    *) echo "docker/test.sh: ZPIPE_DOCKER_ONLY=$only: only 'durable' is known" >&2; exit 2 ;;
esac
readonly spec1='range branch | host_tag mode=remote'
readonly spec2='range branch | slow_square mode=remote'
# range's throttle (4096 by default) bounds how far it runs ahead of the
# workers: 64 makes checkpoints come every second, not only at the end.
readonly spec6='range branch throttle=64 | slow_square mode=remote'
readonly spec4='range branch | host_tag mode=remote pool=io | host_tag mode=remote pool=cpu'
readonly project="zpipetest$$"
readonly image="zpipe:test-$$"
readonly build_image="zpipe-build:test-$$"
readonly check_image="zpipe-check:test-$$"
readonly intruder="${project}_intruder"

tmp=$(mktemp -d /tmp/zpipe-docker.XXXXXX)
dockerd_pid=""     # the daemon this script started, if any
made_policy=false  # it wrote /usr/sbin/policy-rc.d
made_key=false     # its daemon wrote /etc/docker/key.json
imported_base=false
bridges_before=""  # bridges there before our daemon
made_run_dirs=""   # directories under /run that our daemon will make
start=$SECONDS

step() { echo "== $* [$((SECONDS - start)) s]"; }
die() { echo "docker/test.sh: $*" >&2; exit 1; }
# Prints the last lines of a log, for a failure.
show() { echo "--- last lines of $1:" >&2; tail -n "${2:-40}" "$1" >&2 || true; }

compose_cmd=(docker-compose --project-name "$project" -f docker/compose.yml)
curve_cmd=("${compose_cmd[@]}" -f docker/compose.curve.yml)
pools_cmd=(docker-compose --project-name "$project" -f docker/compose.pools.yml)
python_cmd=(docker-compose --project-name "$project" -f examples/python/compose.yml)
metrics_cmd=("${compose_cmd[@]}" -f docker/compose.metrics.yml)
durable_cmd=("${compose_cmd[@]}" -f docker/compose.durable.yml)
compose() { "${compose_cmd[@]}" "$@"; }
pools() { "${pools_cmd[@]}" "$@"; }
compose_curve() { "${curve_cmd[@]}" "$@"; }
compose_metrics() { "${metrics_cmd[@]}" "$@"; }
compose_durable() { "${durable_cmd[@]}" "$@"; }

# ---- Teardown -------------------------------------------------------------

stop_dockerd() {
    kill -TERM "$dockerd_pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$dockerd_pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
    # Whatever a daemon that died hard left mounted under our directory.
    awk -v d="$tmp/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    if command -v ip >/dev/null; then
        for b in $(ip -o link show type bridge | awk -F': ' '{ print $2 }'); do
            case " $bridges_before " in
                *" $b "*) ;;
                *) case $b in br-* | docker0) ip link delete "$b" || true ;; esac ;;
            esac
        done
    fi
    if $made_key; then rm -f /etc/docker/key.json; fi
    # The run directories that dockerd and containerd's shims always use.
    for d in $made_run_dirs; do rmdir "$d" 2>/dev/null || true; done
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    echo "== teardown [$((SECONDS - start)) s]"
    if docker version >/dev/null 2>&1; then
        docker rm -f "$intruder" >/dev/null 2>&1
        # Its volume too: only the file that declares it removes it.
        compose_durable down --remove-orphans --volumes --timeout 3 >/dev/null 2>&1
        ZPIPE_KEYS=$tmp compose_curve down --remove-orphans --volumes --timeout 3 >/dev/null 2>&1
        pools down --remove-orphans --volumes --timeout 3 >/dev/null 2>&1
        docker rmi -f "$check_image" "$image" "$build_image" >/dev/null 2>&1
        if $imported_base; then docker rmi "$base" >/dev/null 2>&1; fi
    fi
    if [ -n "$dockerd_pid" ]; then stop_dockerd; fi
    if $made_policy; then rm -f /usr/sbin/policy-rc.d; fi
    if [ "${ZPIPE_DOCKER_KEEP:-0}" = 1 ]; then
        echo "kept $tmp"
    else
        rm -rf "$tmp"
    fi
    if [ "$rc" = 0 ]; then
        echo "== docker: all passed [$((SECONDS - start)) s]"
    else
        echo "== docker: FAILED (exit status $rc)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- Packages -------------------------------------------------------------

# apt-get install, with a policy-rc.d that keeps packages from starting
# services: this script starts (and stops) the only daemon it needs.
apt_install() {
    echo "installing: $*"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=true
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    if $made_policy; then
        rm -f /usr/sbin/policy-rc.d
        made_policy=false
    fi
}

step "packages"
[ "$(id -u)" = 0 ] || die "run me as root"
need=()
if ! command -v docker >/dev/null ||
    { ! docker version >/dev/null 2>&1 && ! command -v dockerd >/dev/null; }; then
    need+=(docker.io)
fi
command -v docker-compose >/dev/null || need+=(docker-compose)
[ -x /usr/bin/python3 ] || need+=(python3) # Debian's, for the checks of outputs
if [ "${#need[@]}" -gt 0 ]; then apt_install "${need[@]}"; fi
docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /'

# ---- The daemon -----------------------------------------------------------

# Its own daemon, nothing shared with a system one: not the configuration,
# not the containerd namespace. No iptables rules and no IP forwarding:
# containers talk over their compose network's bridge, and builds use the
# host's network (docker build --network host).
start_dockerd() {
    mkdir -p "$tmp/data" "$tmp/exec"
    echo '{}' >"$tmp/daemon.json"
    [ -e /etc/docker/key.json ] || made_key=true # 20.10 writes it there
    for d in /run/docker/plugins /run/docker /run/containerd/s /run/containerd; do
        [ -e "$d" ] || made_run_dirs+=" $d"
    done
    if command -v ip >/dev/null; then
        bridges_before=$(ip -o link show type bridge | awk -F': ' '{ print $2 }' | tr '\n' ' ')
    fi
    dockerd --config-file "$tmp/daemon.json" \
        --data-root "$tmp/data" --exec-root "$tmp/exec" \
        --pidfile "$tmp/dockerd.pid" --host "unix://$tmp/docker.sock" \
        --containerd-namespace zpipe-test \
        --containerd-plugins-namespace zpipe-test-plugins \
        --iptables=false --ip6tables=false --ip-forward=false --bridge=none \
        >"$tmp/dockerd.log" 2>&1 &
    dockerd_pid=$!
    export DOCKER_HOST="unix://$tmp/docker.sock"
    for _ in $(seq 1 150); do
        docker version >/dev/null 2>&1 && return 0
        kill -0 "$dockerd_pid" 2>/dev/null || break
        sleep 0.2
    done
    show "$tmp/dockerd.log"
    die "dockerd did not start"
}

step "docker daemon"
if docker version >/dev/null 2>&1; then
    echo "using the running daemon (${DOCKER_HOST:-default socket})"
else
    start_dockerd
    echo "started dockerd (pid $dockerd_pid) on $DOCKER_HOST"
fi
docker version --format 'client {{.Client.Version}}, server {{.Server.Version}}'

# ---- The base image -------------------------------------------------------

# debian:bookworm-slim from debootstrap: minbase, trimmed as the slim image
# is (no documentation, manual pages or locales; dpkg told to keep it so),
# reaching the mirror the way this machine's apt does.
make_base() {
    command -v debootstrap >/dev/null || apt_install debootstrap
    local mirror root=$tmp/rootfs
    # shellcheck disable=SC2016 # apt's own $(FIELD) syntax, not the shell's
    mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' \
        'Identifier: Packages' 2>/dev/null | awk '$2 == "bookworm" && $3 == "main" { print $1; exit }')
    mirror=${mirror:-http://deb.debian.org/debian/}
    echo "debootstrap from $mirror"
    if ! debootstrap --variant=minbase bookworm "$root" "$mirror" >"$tmp/debootstrap.log" 2>&1; then
        show "$tmp/debootstrap.log"
        die "debootstrap failed"
    fi
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
    apt-config dump | grep -E '^Acquire::(https?::Proxy|Check-Valid-Until|Check-Date) ' \
        >"$root/etc/apt/apt.conf.d/01host" || rm -f "$root/etc/apt/apt.conf.d/01host"
    find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
    rm -rf "$root"/usr/share/{man,info,groff,lintian}/* "$root"/var/cache/apt/*.bin \
        "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    tar -C "$root" -c . | docker import --change 'CMD ["bash"]' - "$base" >/dev/null
    imported_base=true
    rm -rf "$root"
}

step "base image $base"
if docker image inspect "$base" >/dev/null 2>&1; then
    echo "already there"
elif timeout 120 docker pull -q "$base" >"$tmp/pull.log" 2>&1; then
    echo "pulled"
else
    echo "cannot pull it: $(tail -n 1 "$tmp/pull.log")"
    make_base
fi

# ---- Build ----------------------------------------------------------------

# The build context: the files git knows (tracked, or new and not ignored),
# as a tar; the same with any builder, build trees and .git left out. See
# docker/Dockerfile.dockerignore for `docker build .`.
context() {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z --cached --others --exclude-standard |
            tar --exclude='*.key' --ignore-failed-read --null --files-from=- -c
    else
        tar --exclude-vcs --exclude='./build*' --exclude='*.key' -c .
    fi
}

# The legacy builder, which every daemon has, and the host's network for
# apt-get (our daemon has no bridge with a route out).
build() {
    if ! context 2>>"$tmp/build.log" | DOCKER_BUILDKIT=0 docker build --network host --force-rm \
        -f docker/Dockerfile "$@" - \
        >>"$tmp/build.log" 2>&1; then
        show "$tmp/build.log" 60
        die "docker build failed"
    fi
}

step "build the build stage ($build_image)"
build --target build -t "$build_image"
step "build the image ($image)"
build -t "$image"
mb() { docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.1f MB (%d bytes)", $1 / 1e6, $1 }'; }
echo "image size: $(mb "$image"); base $base: $(mb "$base")"
docker run --rm --network none "$image" tasks --plugin zpipe-examples | sed 's/^/  /'

# ---- The packages ---------------------------------------------------------

# The image is Debian's with zpipe's packages installed: they must work
# there as they would on any Debian 12 machine.
version=$(sed -n 's/^project(zpipe VERSION \([0-9.]*\) .*/\1/p' CMakeLists.txt)
[ -n "$version" ] || die "no version in CMakeLists.txt's project()"
step "the packages in the image: zpipe $version"
got=$(docker run --rm --network none "$image" --version)
[ "$got" = "zpipe $version" ] || die "zpipe --version printed '$got', not 'zpipe $version'"
got=$(docker run --rm --network none "$image" run 'range branch | identity' 3 | sort -n | tr '\n' ' ')
[ "$got" = "0 1 2 " ] || die "zpipe run 'range branch | identity' 3 printed '$got', not 0 1 2"
echo "  zpipe --version: $version; zpipe run 'range branch | identity' 3: $got"
if [ -d python/zpipe_worker ]; then
    docker run --rm --network none --entrypoint /usr/bin/python3 "$image" \
        -c 'import zpipe_worker' || die "the image's python3 cannot import zpipe_worker"
    echo "  /usr/bin/python3 -c 'import zpipe_worker': ok"
fi

# libzpipe-dev, from the build stage, installed by apt-get on the image with
# a compiler and cmake; tests/consumer is built against it, as a user's
# project would be, with find_package(zpipe) and with pkg-config.
if [ -z "$only" ]; then
    step "libzpipe-dev on the image: pkg-config, find_package (tests/consumer)"
    mkdir -p "$tmp/check"
    cid=$(docker create --network none "$build_image")
    docker cp "$cid:/debs/dev" "$tmp/check/debs" && docker rm "$cid" >/dev/null ||
        die "no /debs/dev in $build_image"
    cp -r tests/consumer "$tmp/check/consumer"
    cat >"$tmp/check/Dockerfile" <<EOF
FROM $image
USER root
COPY debs/ /tmp/debs/
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \\
      --no-install-recommends /tmp/debs/*.deb gcc libc6-dev make cmake
COPY consumer/ /tmp/consumer/
RUN cmake -S /tmp/consumer -B /tmp/consumer-build && cmake --build /tmp/consumer-build
USER 10001:10001
EOF
    if ! tar -C "$tmp/check" -c . | DOCKER_BUILDKIT=0 docker build --network host --force-rm \
        -t "$check_image" - >"$tmp/check.log" 2>&1; then
        show "$tmp/check.log" 60
        die "libzpipe-dev: the consumer image failed to build"
    fi
    grep -E '^-- zpipe' "$tmp/check.log" | sed 's/^/  /'
    got=$(docker run --rm --network none --entrypoint pkg-config "$check_image" --modversion zpipe)
    [ "$got" = "$version" ] || die "pkg-config --modversion zpipe printed '$got', not '$version'"
    echo "  pkg-config --modversion zpipe: $got"
    for exe in consumer_cmake consumer_static consumer_pkgconfig; do
        docker run --rm --network none --entrypoint "/tmp/consumer-build/$exe" "$check_image" |
            sed 's/^/  /'
    done
    docker rmi "$check_image" >/dev/null
else
    step "libzpipe-dev on the image: skipped (ZPIPE_DOCKER_ONLY=$only)"
fi

step "docker-compose config"
export ZPIPE_IMAGE=$image
# `config -q` validates; docker-compose 1.x also warns that it ignores the
# Swarm-only deploy.endpoint_mode, which is expected.
validate() {
    local out
    out=$("$@" config -q 2>&1) || { echo "$out" >&2; die "$* config: invalid"; }
    [ -z "$out" ] || grep -v 'sub-keys are not supported.*endpoint_mode' <<<"$out" || true
}
validate compose
ZPIPE_KEYS=/nonexistent validate compose_curve
validate pools
validate "${python_cmd[@]}"
validate compose_metrics # its Prometheus image is never pulled here
validate compose_durable
if command -v promtool >/dev/null; then
    promtool check config docker/prometheus.yml | sed 's/^/  /'
fi

# ---- Runs -----------------------------------------------------------------

# Checks the coordinator's JSON lines in $1 against what $2 ('host_tag' or
# 'slow_square') makes of range($3): each output exactly once and, for
# host_tag, from at least $4 workers (default 2).
check() {
    /usr/bin/python3 - "$@" <<'EOF'
import collections, json, sys
path, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
min_hosts = int(sys.argv[4]) if len(sys.argv) > 4 else 2
seen, hosts, bad = collections.Counter(), collections.Counter(), 0
with open(path) as f:
    for line in f:
        if not line.strip():
            continue
        try:
            v = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if kind == "host_tag":
            if not (isinstance(v, list) and len(v) == 2):
                bad += 1
                continue
            v, host = v
            hosts[host] += 1
        seen[json.dumps(v)] += 1
want = {json.dumps(i if kind == "host_tag" else i * i) for i in range(n)}
missing = want - set(seen)
extra = set(seen) - want
dups = [k for k, c in seen.items() if c > 1]
print(f"  {sum(seen.values())} outputs, {len(seen)} distinct of {n} expected"
      + (", served by " + ", ".join(f"{h} ({c})" for h, c in hosts.most_common())
         if hosts else ""))
problems = []
if bad: problems.append(f"{bad} lines not of the expected form")
if missing: problems.append(f"{len(missing)} missing, e.g. {sorted(missing)[:5]}")
if extra: problems.append(f"{len(extra)} unexpected, e.g. {sorted(extra)[:5]}")
if dups: problems.append(f"{len(dups)} more than once, e.g. {dups[:5]}")
if kind == "host_tag" and len(hosts) < min_hosts:
    problems.append(f"{len(hosts)} worker(s) served items, expected {min_hosts} or more"
                    " (items under 0.2 ms all go to the first idle worker: host_tag must"
                    " take longer than that, see docs/docker.md)")
for p in problems:
    print("  FAIL: " + p)
sys.exit(1 if problems else 0)
EOF
}

# The containers of service $1 of the files of $2 (compose, the default, or
# pools); docker-compose 1.x warns, on each call, that it ignores the
# Swarm-only deploy.endpoint_mode.
containers() { "${2:-compose}" ps -q "$1" 2>/dev/null; }
# The stdout (its JSON lines) of coordinator container $1 (default: that of
# compose.yml), without its stderr.
outputs() { docker logs "${1:-$(containers coordinator)}" 2>/dev/null; }
# GET /metrics from port 9464 of container $1, at its address on the
# compose network (the host is on that network's bridge).
scrape() {
    local ip
    ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1")
    /usr/bin/python3 - "$ip" <<'EOF'
import sys, urllib.request
url = "http://%s:9464/metrics" % sys.argv[1]
with urllib.request.urlopen(url, timeout=10) as r:
    sys.stdout.write(r.read().decode())
EOF
}
# Waits for the coordinator of run $1 to end; keeps its outputs in
# $tmp/run$1.jsonl and its log beside them; dies unless it exited with 0.
finish_run() {
    local status
    status=$(timeout 120 docker wait "$coordinator") || die "run $1: the coordinator did not finish"
    outputs "$coordinator" >"$tmp/run$1.jsonl"
    docker logs "$coordinator" >"$tmp/run$1.coordinator.log" 2>&1
    if [ "$status" != 0 ]; then
        show "$tmp/run$1.coordinator.log"
        die "run $1: the coordinator exited with status $status"
    fi
}

# ---- Run 6: a durable run -------------------------------------------------

# STATE and FILE of compose.durable.yml, on its volume.
readonly state_dir=/var/lib/zpipe
readonly state_volume="${project}_zpipe-state"
# Prints file $1 of that volume, read by a container of its own (the
# coordinator's may be down, or restarting).
from_volume() {
    docker run --rm --network none -v "$state_volume:/data:ro" --entrypoint cat \
        "$image" "/data/$1"
}
# Prints key $1 of the JSON object on stdin (true/false for booleans);
# nothing, and status 1, when stdin is not such an object (yet).
json_key() {
    /usr/bin/python3 -c 'import json, sys
v = json.load(sys.stdin)[sys.argv[1]]
print(str(v).lower() if isinstance(v, bool) else v)' "$1" 2>/dev/null
}
# The coordinator's state as the engine sees it: status, exit code, restarts.
engine_state() {
    docker inspect -f '{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}' "$1"
}

# compose.durable.yml: the coordinator with --checkpoint on a volume and
# restart: on-failure. zpipe inside it is SIGKILLed once the volume holds a
# checkpoint with a tenth of the outputs (as an OOM kill or a crash would:
# `docker kill` would not do, since the engine never restarts a container
# that was killed through it); the engine starts the container again, the
# same command resumes from STATE and the run ends with exit status 0, after
# which the container stays down. The output file must hold every square
# exactly once, and STATE say done; started once more, the container says
# the run is done and changes nothing.
durable_run() {
    local t0 committed=0 before after status code restarts resumed sum
    step "run 6: durable (compose.durable.yml), '$spec6' [$items6], the coordinator SIGKILLed mid-run"
    t0=$SECONDS
    # One thread per worker: at least items6 * 10 ms / 3 = 10 s.
    ZPIPE_WORKER_THREADS=1 ZPIPE_SPEC=$spec6 ZPIPE_ARGS="[$items6]" compose_durable up \
        --no-build --detach --scale worker="$workers" >"$tmp/run6.log" 2>&1 ||
        { show "$tmp/run6.log"; die "run 6: up failed"; }
    coordinator=$(containers coordinator)
    for _ in $(seq 1 300); do # 60 s for a checkpoint with a tenth of the items
        committed=$(docker exec "$coordinator" cat "$state_dir/run.state" 2>/dev/null |
            json_key outputs) || committed=0
        [ "$committed" -lt $((items6 / 10)) ] || break
        sleep 0.2
    done
    [ "$committed" -ge $((items6 / 10)) ] ||
        die "run 6: no checkpoint with $((items6 / 10)) outputs in $state_dir/run.state within 60 s"
    echo "  checkpoint in STATE with $committed outputs committed [$((SECONDS - t0)) s into the run]"
    before=$(engine_state "$coordinator")
    [ "${before%% *}" = running ] || die "run 6: the coordinator is '$before', not running"
    # SIGKILL to every process of the container's user but its init (and the
    # shell itself): zpipe dies, the init exits 137, the container with it.
    docker exec "$coordinator" sh -c 'kill -KILL -1' >/dev/null 2>&1 || true
    echo "  SIGKILLed zpipe in the coordinator's container" \
        "$(docker inspect -f '{{.Config.Hostname}}' "$coordinator") [$((SECONDS - t0)) s]"
    for _ in $(seq 1 300); do # 60 s for the engine to start it again
        read -r status code restarts <<<"$(engine_state "$coordinator")"
        if [ "$restarts" -ge 1 ] && [ "$status" != restarting ]; then break; fi
        sleep 0.2
    done
    [ "$restarts" -ge 1 ] ||
        die "run 6: the engine did not restart the coordinator (state: $status $code $restarts)"
    echo "  restarted by the engine: restart count $restarts, now $status [$((SECONDS - t0)) s]"
    for _ in $(seq 1 900); do # 180 s for the resumed run to finish
        read -r status code restarts <<<"$(engine_state "$coordinator")"
        [ "$status" != exited ] || break
        sleep 0.2
    done
    docker logs "$coordinator" >"$tmp/run6.coordinator.log" 2>&1
    [ "$status" = exited ] || { show "$tmp/run6.coordinator.log"; die "run 6: still $status after 180 s"; }
    [ "$code" = 0 ] ||
        { show "$tmp/run6.coordinator.log"; die "run 6: the coordinator exited with status $code"; }
    resumed=$(grep -m1 'resuming from' "$tmp/run6.coordinator.log") ||
        { show "$tmp/run6.coordinator.log"; die "run 6: the coordinator never said it resumed"; }
    echo "  finished: exit status 0 after $restarts restart(s) [$((SECONDS - t0)) s]; $resumed"
    # As docs/docker.md reads it: a one-off container of the service.
    compose_durable run --rm -T --no-deps --entrypoint cat coordinator "$state_dir/out.jsonl" \
        >"$tmp/run6.jsonl" 2>>"$tmp/run6.log" ||
        { show "$tmp/run6.log"; die "run 6: no out.jsonl on the volume"; }
    from_volume run.state >"$tmp/run6.state" || die "run 6: no run.state on the volume"
    check "$tmp/run6.jsonl" slow_square "$items6" || die "run 6: wrong outputs"
    if [ "$(json_key 'done' <"$tmp/run6.state")" != true ] ||
        [ "$(json_key outputs <"$tmp/run6.state")" != "$items6" ] ||
        [ "$(json_key bytes <"$tmp/run6.state")" != "$(wc -c <"$tmp/run6.jsonl")" ]; then
        cat "$tmp/run6.state" >&2
        die "run 6: STATE does not say done with $items6 outputs, all of the file's bytes"
    fi
    after=$(engine_state "$coordinator")
    [ "$after" = "exited 0 $restarts" ] || die "run 6: the coordinator did not stay down ($after)"
    echo "  STATE: done, $items6 outputs, $(wc -c <"$tmp/run6.jsonl") bytes; the container stays down"
    # Started again on the finished STATE: nothing to do, exit 0, FILE as it was.
    sum=$(md5sum <"$tmp/run6.jsonl")
    docker start --attach "$coordinator" >"$tmp/run6.again.log" 2>&1 ||
        { show "$tmp/run6.again.log"; die "run 6: started again, the coordinator failed"; }
    grep -q 'the run is done already' "$tmp/run6.again.log" ||
        { show "$tmp/run6.again.log"; die "run 6: started again, it did not say the run was done"; }
    [ "$(from_volume out.jsonl | md5sum)" = "$sum" ] ||
        die "run 6: started again on a finished STATE, it changed the output file"
    echo "  started again: '$(grep -m1 'done already' "$tmp/run6.again.log")', exit 0, file unchanged"
    compose_durable down --remove-orphans --volumes --timeout 3 >/dev/null 2>&1
}

if [ -n "$only" ]; then
    durable_run
    exit 0
fi

step "run 1: up --scale worker=$workers, '$spec1' [$items1]"
if ! ZPIPE_SPEC=$spec1 ZPIPE_ARGS="[$items1]" timeout 300 "${compose_cmd[@]}" up --no-build \
    --no-color --timeout 3 --scale worker="$workers" --exit-code-from coordinator >"$tmp/run1.log" 2>&1; then
    show "$tmp/run1.log"
    die "run 1: the coordinator failed"
fi
outputs >"$tmp/run1.jsonl"
check "$tmp/run1.jsonl" host_tag "$items1" || { show "$tmp/run1.log"; die "run 1: wrong outputs"; }
compose down --remove-orphans --timeout 3 >/dev/null 2>&1

step "run 2: '$spec2' [$items2], one of $workers workers killed mid-run"
# One thread per worker: the run takes at least items2 * 10 ms / 3 = 10 s
# whatever the machine, time enough to scrape and kill while it goes; the
# containers are looked up before the outputs are counted (each
# docker-compose call takes a second or so).
ZPIPE_WORKER_THREADS=1 ZPIPE_SPEC=$spec2 ZPIPE_ARGS="[$items2]" compose up \
    --no-build --detach --scale worker="$workers" >"$tmp/run2.log" 2>&1 ||
    { show "$tmp/run2.log"; die "run 2: up failed"; }
coordinator=$(containers coordinator)
victim=$(containers worker | sed -n 1p)
done_at_kill=0
for _ in $(seq 1 300); do # 60 s for a tenth of the items
    done_at_kill=$(outputs "$coordinator" | wc -l)
    [ "$done_at_kill" -lt $((items2 / 10)) ] || break
    sleep 0.2
done
scrape "$coordinator" >"$tmp/run2.coordinator.metrics" || die "run 2: no metrics from the coordinator"
scrape "$victim" >"$tmp/run2.worker.metrics" || die "run 2: no metrics from a worker"
grep -q '^zpipe_stage_items_out_total{stage="2",task="slow_square"} [1-9]' \
    "$tmp/run2.coordinator.metrics" || die "run 2: the coordinator's metrics lack slow_square's outputs"
served_by=$(grep -c '^zpipe_worker_batches_total{stage="2",task="slow_square",worker=' \
    "$tmp/run2.coordinator.metrics" || true)
[ "$served_by" -ge 2 ] || die "run 2: the coordinator's metrics name $served_by worker(s)"
grep -q '^zpipe_worker_coordinator_connected 1$' "$tmp/run2.worker.metrics" ||
    die "run 2: a worker's metrics say it is not connected"
echo "  metrics: $(grep -c '^zpipe_' "$tmp/run2.coordinator.metrics") samples from the" \
    "coordinator ($served_by workers), $(grep -c '^zpipe_' "$tmp/run2.worker.metrics") from a worker"
docker kill "$victim" >/dev/null
echo "  killed worker $(docker inspect -f '{{.Config.Hostname}}' "$victim") after $done_at_kill outputs"
finish_run 2
[ "$done_at_kill" -lt "$items2" ] || die "run 2: the run was over before the kill"
check "$tmp/run2.jsonl" slow_square "$items2" || die "run 2: wrong outputs"
compose down --remove-orphans --timeout 3 >/dev/null 2>&1

step "run 3: CURVE (compose.curve.yml), keys from zpipe keygen, an intruder refused"
keys=$tmp/keys
install -d -m 700 -o 10001 -g 10001 "$keys"
for name in coordinator worker intruder; do
    docker run --rm --network none -v "$keys:/keys" -w /keys "$image" keygen "$name" >/dev/null
done
export ZPIPE_KEYS=$keys
# The coordinator alone first: it waits for a worker. An intruder, a worker
# whose key is not on the allow-list, connects and is refused; then the
# real workers come, and only they serve items.
ZPIPE_SPEC=$spec1 ZPIPE_ARGS="[$items3]" compose_curve up --no-build --detach \
    --scale worker=0 >"$tmp/run3.log" 2>&1 || { show "$tmp/run3.log"; die "run 3: up failed"; }
coordinator=$(containers coordinator)
docker run --detach --name "$intruder" --network "${project}_default" \
    -v "$keys/coordinator.pub:/keys/coordinator.pub:ro" -v "$keys/intruder.key:/keys/intruder.key:ro" \
    "$image" worker --connect tcp://coordinator:5555 --plugin zpipe-examples \
    --curve-server /keys/coordinator.pub --curve-secret /keys/intruder.key \
    >/dev/null 2>>"$tmp/run3.log" || { show "$tmp/run3.log"; die "run 3: no intruder"; }
for _ in $(seq 1 600); do # 60 s; grep -q would end docker logs early: pipefail
    if docker logs "$coordinator" 2>&1 | grep refused >/dev/null; then break; fi
    sleep 0.1
done
docker logs "$coordinator" 2>&1 | grep 'refused' | sed 's/^/  coordinator: /' ||
    die "run 3: the coordinator did not refuse the intruder"
ZPIPE_SPEC=$spec1 ZPIPE_ARGS="[$items3]" compose_curve up --no-build --detach --no-recreate \
    --scale worker=2 >>"$tmp/run3.log" 2>&1 || { show "$tmp/run3.log"; die "run 3: up failed"; }
finish_run 3
check "$tmp/run3.jsonl" host_tag "$items3" 1 || die "run 3: wrong outputs"
! grep -q "\"$(docker inspect -f '{{.Config.Hostname}}' "$intruder")\"" "$tmp/run3.jsonl" ||
    die "run 3: the intruder served items"
docker rm -f "$intruder" >/dev/null
compose_curve down --remove-orphans --timeout 3 >/dev/null 2>&1

# Checks run 4's JSON lines in $1, [[item, io host], cpu host] for each item
# of range($2): each item exactly once, its stage 2 served by one of the
# io containers (host names in $3, comma-separated) and its stage 3 by one
# of the cpu containers ($4).
check_pools() {
    /usr/bin/python3 - "$@" <<'EOF'
import collections, json, sys
path, n = sys.argv[1], int(sys.argv[2])
pools = {"io": set(sys.argv[3].split(",")), "cpu": set(sys.argv[4].split(","))}
seen, bad, strays = collections.Counter(), 0, []
served = {pool: collections.Counter() for pool in pools}
with open(path) as f:
    for line in f:
        if not line.strip():
            continue
        try:
            (item, io), cpu = json.loads(line)
        except (TypeError, ValueError):
            bad += 1
            continue
        seen[json.dumps(item)] += 1
        for pool, host in (("io", io), ("cpu", cpu)):
            served[pool][host] += 1
            if host not in pools[pool]:
                strays.append(f"{item} by {host} as {pool}")
want = {json.dumps(i) for i in range(n)}
missing, extra = want - set(seen), set(seen) - want
dups = [k for k, c in seen.items() if c > 1]
print(f"  {sum(seen.values())} outputs, {len(seen)} distinct of {n} expected")
for pool in pools:
    print(f"  pool {pool}: " + ", ".join(f"{h} ({c})" for h, c in served[pool].most_common()))
problems = []
if bad: problems.append(f"{bad} lines not of the form [[item, io host], cpu host]")
if missing: problems.append(f"{len(missing)} missing, e.g. {sorted(missing)[:5]}")
if extra: problems.append(f"{len(extra)} unexpected, e.g. {sorted(extra)[:5]}")
if dups: problems.append(f"{len(dups)} more than once, e.g. {dups[:5]}")
if strays: problems.append(f"{len(strays)} served by a container of the wrong pool, e.g. {strays[:5]}")
for p in problems:
    print("  FAIL: " + p)
sys.exit(1 if problems else 0)
EOF
}

# The host names of the containers of service $1 of compose.pools.yml,
# comma-separated: what host_tag writes.
hosts_of() {
    local c
    for c in $(containers "$1" pools); do
        docker inspect -f '{{.Config.Hostname}}' "$c"
    done | paste -sd, -
}

step "run 4: two pools (compose.pools.yml), '$spec4' [$items4], an io container killed mid-run"
# One thread per worker: the run takes at least items4 * 2 ms / 2 = 8 s
# whatever the machine, and the containers are looked up before the
# outputs are counted (each docker-compose call takes a second or so), so
# the kill comes mid-run; the killed container stays listed by ps.
ZPIPE_WORKER_THREADS=1 ZPIPE_SPEC=$spec4 ZPIPE_ARGS="[$items4]" pools up \
    --no-build --detach --scale worker-io=2 --scale worker-cpu=2 \
    >"$tmp/run4.log" 2>&1 || { show "$tmp/run4.log"; die "run 4: up failed"; }
coordinator=$(containers coordinator pools)
victim=$(containers worker-io pools | sed -n 1p)
done_at_kill=0
for _ in $(seq 1 300); do # 60 s for a fifth of the items
    done_at_kill=$(outputs "$coordinator" | wc -l)
    [ "$done_at_kill" -lt $((items4 / 5)) ] || break
    sleep 0.2
done
docker kill "$victim" >/dev/null
echo "  killed io worker $(docker inspect -f '{{.Config.Hostname}}' "$victim") after $done_at_kill outputs"
io_hosts=$(hosts_of worker-io)
cpu_hosts=$(hosts_of worker-cpu)
echo "  pool io: $io_hosts; pool cpu: $cpu_hosts"
finish_run 4
[ "$done_at_kill" -lt "$items4" ] || die "run 4: the run was over before the kill"
check_pools "$tmp/run4.jsonl" "$items4" "$io_hosts" "$cpu_hosts" || die "run 4: wrong outputs"
pools down --remove-orphans --timeout 3 >/dev/null 2>&1

step "run 5: examples/python/compose.yml, estimate_pi served by 2 Python workers"
if docker run --rm --network none --entrypoint python3 "$image" -c 'import zpipe_worker' \
    >/dev/null 2>&1; then
    if ! ZPIPE_ITEMS='[40]' ZPIPE_POINTS=20000 timeout 300 "${python_cmd[@]}" up --no-build \
        --no-color --timeout 3 --scale pyworker=2 --exit-code-from coordinator \
        >"$tmp/run5.log" 2>&1; then
        show "$tmp/run5.log"
        die "run 5: the coordinator failed"
    fi
    docker logs "$("${python_cmd[@]}" ps -q coordinator 2>/dev/null)" 2>/dev/null >"$tmp/run5.jsonl"
    /usr/bin/python3 -c 'import json, sys; s = json.loads(open(sys.argv[1]).read())
assert s["count"] == 40 and 3.0 < s["mean"] < 3.3, s
print(f"  {s}")' "$tmp/run5.jsonl" || die "run 5: wrong summary"
    "${python_cmd[@]}" down --remove-orphans --timeout 3 >/dev/null 2>&1
else
    echo "  skipped: python3 -c 'import zpipe_worker' fails in $image" \
        "(python3 and the python3-zpipe-worker package are not in it)"
fi

durable_run
