#!/bin/sh
# Restore the egress chains at boot, before Docker starts the containers: every <deployment>.iptables /
# <deployment>.ip6tables file that the selfhost_vllm role wrote for a multi-node server (iptables-restore
# format, serialized by `selfhost render`: the chain, its rules, the OUTPUT jump for the server's uid) and
# every <deployment>.router.iptables the selfhost_router role wrote (its egress allow-list and jumps).
# Safe to run again: the chain is flushed and refilled, and the jump is deleted before it is inserted.
# Exits non-zero when a file cannot be restored (systemd then keeps Docker down: fail closed).
set -u
dir=${1:-/etc/selfhost/egress}
status=0
for file in "$dir"/*.iptables "$dir"/*.ip6tables; do
  [ -f "$file" ] || continue
  case "$file" in *.ip6tables) cmd=ip6tables ;; *) cmd=iptables ;; esac
  command -v "$cmd-restore" >/dev/null || { echo "selfhost-egress: $cmd-restore missing for $file" >&2; status=1; continue; }
  # The jump lines are "-I <parent> 1 <match> -j <chain>" (OUTPUT for a multi-node server's uid; DOCKER-USER and
  # INPUT for the hybrid router's egress network), written by selfhost (no user text): delete copies first.
  # DOCKER-USER is Docker's chain, made here when Docker has not started yet (Docker keeps an existing one).
  if grep -q '^-I DOCKER-USER ' "$file"; then "$cmd" -w -N DOCKER-USER 2>/dev/null || true; fi
  sed -n 's/^-I \([A-Z][A-Z-]*\) 1 /\1 /p' "$file" | while read -r parent rule; do
    # shellcheck disable=SC2086  # the rule is a list of arguments
    while "$cmd" -w -D "$parent" $rule 2>/dev/null; do :; done
  done
  if "$cmd-restore" -w --noflush < "$file"; then
    echo "selfhost-egress: restored $file"
  else
    echo "selfhost-egress: FAILED to restore $file" >&2
    status=1
  fi
done
exit "$status"
