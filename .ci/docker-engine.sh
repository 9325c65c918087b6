#!/usr/bin/env bash
# Idempotently install and start a local Docker engine for the e2e tests.
# No systemd on the CI/dev machines: dockerd runs as a plain background process.
set -euo pipefail

LOG=${DOCKERD_LOG:-/tmp/dockerd.log}
WAIT_S=${DOCKERD_WAIT_S:-60}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# 1. Packages: Debian's engine (docker.io), debootstrap for base images, iptables for NAT,
#    openssh-client for the test hosts' keypair.
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
if [ ${#need[@]} -gt 0 ]; then
  echo "docker-engine: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# 2. The client on PATH may be newer than Debian's daemon (e.g. /usr/local/bin/docker 28.x
#    vs dockerd 20.10). Modern clients negotiate the API version down by themselves; only
#    pin DOCKER_API_VERSION when negotiation is not possible (checked below).
if ! docker info >/dev/null 2>&1; then
  if pgrep -x dockerd >/dev/null 2>&1; then
    echo "docker-engine: dockerd is running but not answering yet"
  else
    echo "docker-engine: starting dockerd (log: $LOG)"
    $SUDO nohup dockerd >"$LOG" 2>&1 &
  fi
  for _ in $(seq "$WAIT_S"); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
fi

if ! docker info >/dev/null 2>&1; then
  # Last resort: an old daemon with a client that refuses to negotiate.
  api=$(curl -fsS --unix-socket /var/run/docker.sock http://localhost/version 2>/dev/null \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["ApiVersion"])' 2>/dev/null || true)
  if [ -n "$api" ] && DOCKER_API_VERSION="$api" docker info >/dev/null 2>&1; then
    echo "docker-engine: client needs DOCKER_API_VERSION=$api (export it)"
  else
    echo "docker-engine: ERROR: Docker engine not reachable after ${WAIT_S}s; see $LOG" >&2
    tail -n 20 "$LOG" >&2 2>/dev/null || true
    exit 1
  fi
fi

echo "docker-engine: ready ($(docker version --format 'client {{.Client.Version}} / server {{.Server.Version}} (API {{.Server.APIVersion}})'))"
