#!/usr/bin/env bash
# Starts a single-node Slurm cluster (munged, slurmctld, slurmd on this host) whose whole state lives
# in DIR, for tests and benchmarks. Needs root and the Debian packages slurm-wlm and munge
# (scripts/setup.sh installs them). Stop it with scripts/slurm/stop-cluster.sh DIR.
#
#   scripts/slurm/start-cluster.sh DIR
#   . DIR/env          # sets SLURM_CONF for sbatch, sinfo, squeue, scancel
#
# DIR gets slurm.conf, a fresh munge key (mode 0400, owned by munge) and munged's own socket (named
# in slurm.conf), the daemons' pid files (munged.pid, slurmctld.pid, slurmd.pid), their logs in
# DIR/log, and the controller's state and the node's spool. The node's CPUs and memory are what
# `slurmd -C` reports. Controller and node listen on two free TCP ports (SLURM_PORT=P picks P and
# P+1) and are reached on 127.0.0.1, so a system Slurm or munge on the same machine is left alone.
# The backfill scheduler runs every second (SLURM_SCHEDULER_PARAMETERS= restores Slurm's defaults).
# The script returns once the node is idle (at most SLURM_START_TIMEOUT seconds, default 60); on
# failure it prints the daemons' logs, stops what it started, and exits 1.
set -euo pipefail
dir=${1:?usage: start-cluster.sh DIR}
say() { printf '[slurm] %s\n' "$*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "needs root (slurmd starts jobs as their users)"; exit 1; }
for cmd in munged mungekey slurmctld slurmd sinfo; do
  command -v "$cmd" >/dev/null || { say "$cmd not found: install the Debian packages slurm-wlm and munge"; exit 1; }
done
id munge >/dev/null 2>&1 || { say "no 'munge' user: install the Debian package munge"; exit 1; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
[ ! -e "$dir/slurmctld.pid" ] || { say "$dir already holds a cluster (stop it first)"; exit 1; }
# munged runs as the munge user, which must reach its folder; munged refuses group/other-writable ones.
chmod 0755 "$dir"
runuser -u munge -- test -x "$dir" ||
  { say "the user munge cannot reach $dir: every folder above it needs execute permission for others"; exit 1; }
mkdir -p "$dir/log" "$dir/state" "$dir/spool" "$dir/munge"
chown munge:munge "$dir/munge"
chmod 0711 "$dir/munge"  # munged requires execute for all on its socket folder

# 1. munge: a new key and a daemon with its own socket, pid, log and seed files in DIR/munge.
key="$dir/munge/munge.key"
runuser -u munge -- mungekey --create --keyfile="$key" --force
chmod 0400 "$key"
socket="$dir/munge/munge.socket"
runuser -u munge -- munged --socket="$socket" --key-file="$key" --pid-file="$dir/munge/munged.pid" \
  --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
for _ in $(seq 50); do [ -s "$dir/munge/munged.pid" ] && [ -S "$socket" ] && break; sleep 0.1; done
cp "$dir/munge/munged.pid" "$dir/munged.pid"

# 2. Two free ports.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=${SLURM_PORT:-}
if [ -z "$port" ]; then
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 20000))
    if port_free "$p" && port_free $((p + 1)); then port=$p; break; fi
  done
  [ -n "$port" ] || { say "no free TCP port pair found"; exit 1; }
fi

# 3. slurm.conf: this host as controller and only node, with its CPUs and memory from `slurmd -C`.
host=$(hostname -s)
# The backfill scheduler, which also starts jobs whose dependencies have just been met, runs every
# second instead of every 30 (Slurm's default); SLURM_SCHEDULER_PARAMETERS= restores the defaults.
sched_params=${SLURM_SCHEDULER_PARAMETERS-bf_interval=1}
node=$(slurmd -C | head -n 1)
case "$node" in NodeName=*) ;; *) say "slurmd -C gave no node line: $node"; exit 1 ;; esac
node=${node#NodeName=* }
cat >"$dir/slurm.conf" <<CONF
# Written by scripts/slurm/start-cluster.sh: a single-node test cluster whose state is in $dir.
ClusterName=dpaudit-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=$sched_params
SwitchType=switch/none
MpiDefault=none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
cat >"$dir/env" <<ENV
export SLURM_CONF=$dir/slurm.conf
ENV
export SLURM_CONF="$dir/slurm.conf"

fail() {
  say "$*"
  for log in "$dir/munge/munged.log" "$dir/log/slurmctld.log" "$dir/log/slurmd.log"; do
    [ -f "$log" ] && { say "--- $log (last 30 lines)"; tail -n 30 "$log" >&2; }
  done
  "$(dirname "$0")/stop-cluster.sh" "$dir" || true
  exit 1
}

# 4. The daemons (they fork; -i ignores state from a previous cluster in the same folder).
slurmctld -i -f "$dir/slurm.conf" || fail "slurmctld did not start"
slurmd -f "$dir/slurm.conf" || fail "slurmd did not start"

# 5. Wait until the node is idle.
timeout=${SLURM_START_TIMEOUT:-60}
deadline=$((SECONDS + timeout))
state=""
while ((SECONDS < deadline)); do
  state=$(sinfo -h -n "$host" -o '%t' 2>/dev/null | head -n 1 || true)
  [ "$state" = idle ] && break
  sleep 0.5
done
[ "$state" = idle ] || fail "node $host not idle after ${timeout}s (state: '${state:-no answer}')"
say "cluster up in $dir (node $host: $node; ports $port, $((port + 1))); . $dir/env to use it"
