#!/usr/bin/env bash
# Stops the cluster scripts/slurm/start-cluster.sh DIR started: exactly the processes named by the
# pid files in DIR (slurmd, slurmctld, munged), SIGTERM first, SIGKILL after 10 s. Safe to re-run.
set -uo pipefail
dir=${1:?usage: stop-cluster.sh DIR}
say() { printf '[slurm] %s\n' "$*" >&2; }
status=0
for name in slurmd slurmctld munged; do
  pidfile="$dir/$name.pid"
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  # Only a live process whose command is the daemon this file names (a stale file's PID may be reused).
  if [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$name" ]; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name ($pid) still running after 10 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || status=1
    fi
  fi
  rm -f "$pidfile"
done
exit $status
