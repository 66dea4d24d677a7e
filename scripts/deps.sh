#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages zpipe needs to build and test, only those
# missing (so a machine that has them all needs no network). Run as root.
set -euo pipefail
# prometheus: the metrics test scrapes a run with a real Prometheus server
# (and checks pages with its promtool). libsqlite3-dev: examples/sqlite_sink.c
# and its test.
pkgs=(build-essential cmake pkg-config git libzmq3-dev libmsgpack-dev
      libjansson-dev libuv1-dev libmicrohttpd-dev libcmocka-dev clang-format
      clang libclang-rt-14-dev dpkg-dev file lintian python3 python3-zmq
      python3-msgpack prometheus iproute2 libsqlite3-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
