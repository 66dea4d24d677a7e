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
#     out) and validates docker/compose.yml, its CURVE and Prometheus
#     variants and docker/prometheus.yml (with promtool, when there);
#  5. run 1: `docker-compose up --scale worker=3 --exit-code-from
#     coordinator`: every item comes out exactly once, from several workers;
#  6. run 2: the coordinator's and a worker's metrics are read while the run
#     goes; then a worker container is killed mid-run: nothing is lost;
#  7. run 3: the CURVE variant (compose.curve.yml) with `zpipe keygen`
#     keys: a worker with a key not on the allow-list is refused;
# then removes what it made: containers, networks, images, the daemon it
# started, temporary files. Traffic between containers stays on a bridge
# of this machine; only the image build reaches the Debian mirror.
# Idempotent; called by scripts/test.sh. Environment: ZPIPE_DOCKER_ITEMS
# (run 1's items, default 6000), ZPIPE_DOCKER_KEEP=1 keeps the temporary
# directory (logs, outputs) for a post-mortem.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly base=debian:bookworm-slim
readonly workers=3
readonly items1=${ZPIPE_DOCKER_ITEMS:-6000}
readonly items2=2000 # slow_square: 10 ms each, 6 at once: ~4 s
readonly items3=2000
readonly spec1='range branch | host_tag mode=remote'
readonly spec2='range branch | slow_square mode=remote'
readonly project="zpipetest$$"
readonly image="zpipe:test-$$"
readonly build_image="zpipe-build:test-$$"
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
metrics_cmd=("${compose_cmd[@]}" -f docker/compose.metrics.yml)
compose() { "${compose_cmd[@]}" "$@"; }
compose_curve() { "${curve_cmd[@]}" "$@"; }
compose_metrics() { "${metrics_cmd[@]}" "$@"; }

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
        ZPIPE_KEYS=$tmp compose_curve down --remove-orphans --volumes --timeout 3 >/dev/null 2>&1
        docker rmi -f "$image" "$build_image" >/dev/null 2>&1
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
command -v python3 >/dev/null || need+=(python3)
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
docker run --rm --network none "$image" tasks --plugin /usr/local/lib/zpipe/zpipe-examples.so |
    sed 's/^/  /'

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
validate compose_metrics # its Prometheus image is never pulled here
if command -v promtool >/dev/null; then
    promtool check config docker/prometheus.yml | sed 's/^/  /'
fi

# ---- Runs -----------------------------------------------------------------

# Checks the coordinator's JSON lines in $1 against what $2 ('host_tag' or
# 'slow_square') makes of range($3): each output exactly once and, for
# host_tag, from at least $4 workers (default 2).
check() {
    python3 - "$@" <<'EOF'
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

# The containers of a service (docker-compose 1.x warns, on each call, that
# it ignores the Swarm-only deploy.endpoint_mode).
containers() { compose ps -q "$1" 2>/dev/null; }
# The coordinator's stdout (its JSON lines), without its stderr.
outputs() { docker logs "$(containers coordinator)" 2>/dev/null; }
# GET /metrics from port 9464 of container $1, at its address on the
# compose network (the host is on that network's bridge).
scrape() {
    local ip
    ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1")
    python3 - "$ip" <<'EOF'
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
    outputs >"$tmp/run$1.jsonl"
    docker logs "$coordinator" >"$tmp/run$1.coordinator.log" 2>&1
    if [ "$status" != 0 ]; then
        show "$tmp/run$1.coordinator.log"
        die "run $1: the coordinator exited with status $status"
    fi
}

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
ZPIPE_SPEC=$spec2 ZPIPE_ARGS="[$items2]" compose up --no-build --detach \
    --scale worker="$workers" >"$tmp/run2.log" 2>&1 || { show "$tmp/run2.log"; die "run 2: up failed"; }
coordinator=$(containers coordinator)
done_at_kill=0
for _ in $(seq 1 300); do # 60 s for a fifth of the items
    done_at_kill=$(outputs | wc -l)
    [ "$done_at_kill" -lt $((items2 / 5)) ] || break
    sleep 0.2
done
victim=$(containers worker | sed -n 1p)
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
    "$image" worker --connect tcp://coordinator:5555 --plugin /usr/local/lib/zpipe/zpipe-examples.so \
    --curve-server /keys/coordinator.pub --curve-secret /keys/intruder.key \
    >/dev/null 2>>"$tmp/run3.log" || { show "$tmp/run3.log"; die "run 3: no intruder"; }
for _ in $(seq 1 100); do # grep -q would end docker logs early: pipefail
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
