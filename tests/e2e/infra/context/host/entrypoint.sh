#!/bin/sh
# Start a test host: authorize the test key, start dockerd (via its SysV script, so
# Ansible's `service` module can restart it like on a real host), then run sshd in front.
set -e
if [ -n "$AUTHORIZED_KEY" ]; then
  printf '%s\n' "$AUTHORIZED_KEY" > /root/.ssh/authorized_keys
  chmod 600 /root/.ssh/authorized_keys
fi
ssh-keygen -A >/dev/null
/etc/init.d/docker start || { echo "dockerd failed to start:"; tail -n 30 /var/log/docker.log; }
exec /usr/sbin/sshd -D -e
