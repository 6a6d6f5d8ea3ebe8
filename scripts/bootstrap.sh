#!/usr/bin/env bash
# Install and start what this machine lacks, idempotently (Debian, as root):
#   a Docker engine (Debian's docker.io) and iptables, debootstrap (to bootstrap the base image),
#   configurable-http-proxy (npm), a C compiler (for data_ingest's native HMAC), the Python
#   environment from requirements.lock (uv), and with --browser Chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
mkdir -p var/log

say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }
need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }

have dockerd || need_apt+=(docker.io)
have iptables || need_apt+=(iptables)
have debootstrap || need_apt+=(debootstrap)
have ip || need_apt+=(iproute2)
have npm || need_apt+=(npm)
have cc || need_apt+=(gcc libc6-dev)
if [[ "${1:-}" == "--browser" ]]; then
  have chromium || need_apt+=(chromium)
fi
if ((${#need_apt[@]})); then
  say "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >var/log/apt.log
fi

if ! docker info >/dev/null 2>&1; then
  say "starting the Docker engine"
  if have systemctl && systemctl start docker 2>/dev/null; then :; else
    nohup dockerd >var/log/dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "the Docker engine did not start: see var/log/dockerd.log" >&2; exit 1; }
fi

CHP_VERSION=5.3.0
if ! have configurable-http-proxy || [[ "$(configurable-http-proxy --version)" != "$CHP_VERSION" ]]; then
  say "npm install -g configurable-http-proxy@$CHP_VERSION"
  npm install -g --silent "configurable-http-proxy@$CHP_VERSION" >var/log/npm.log 2>&1
fi

if ! have uv; then
  say "pip install uv"
  python3 -m pip install --quiet uv
fi
stamp=.venv/.lock-$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [[ ! -f "$stamp" ]]; then
  say "Python environment .venv from requirements.lock"
  [[ -x .venv/bin/python ]] || uv venv --quiet --seed --python python3 .venv
  uv pip install --quiet -p .venv/bin/python -r requirements.lock
  uv pip install --quiet -p .venv/bin/python --no-deps -e .
  rm -f .venv/.lock-*; touch "$stamp"
fi
# Build and self-test data_ingest's native HMAC now rather than in the first ingest run; when it
# cannot be built, ingest uses polars-hash (same pseudonyms, about half the speed) and says so.
.venv/bin/python -m data_ingest.native || say "continuing: ingest will use polars-hash"
say "ready"
