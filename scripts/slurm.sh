#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the sharded-run test (tests/it/slurm.rs):
#   scripts/slurm.sh start DIR   installs Debian's slurm-wlm and munge if missing (as root or
#                                with sudo), writes DIR/slurm.conf and starts munged,
#                                slurmctld and slurmd on 127.0.0.1; their PIDs go to DIR/*.pid
#   scripts/slurm.sh stop DIR    stops the three by those PIDs
# Clients find the cluster with SLURM_CONF=DIR/slurm.conf. Without systemd: munged runs as the
# munge user with /run/munge made by hand; processes are tracked without cgroups
# (proctrack/linuxproc, task/none); the daemons run as root.
set -euo pipefail
cmd=${1:?usage: scripts/slurm.sh start|stop DIR} dir=${2:?usage: scripts/slurm.sh start|stop DIR}
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"

stop() {
  for name in slurmd slurmctld munged; do
    if [ -s "$dir/$name.pid" ]; then
      pid=$(cat "$dir/$name.pid")
      $sudo kill "$pid" 2> /dev/null || true
      for _ in $(seq 50); do $sudo kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
      rm -f "$dir/$name.pid"
    fi
  done
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "usage: scripts/slurm.sh start|stop DIR" >&2; exit 2; }

if ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends slurm-wlm munge > /dev/null
fi
mkdir -p "$dir/state" "$dir/spool"
dir=$(cd "$dir" && pwd)
host=$(hostname -s)

# munge: its key (the package makes one; make it if not), its socket folder, its user.
$sudo mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
[ -s /etc/munge/munge.key ] || $sudo sh -c 'dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2> /dev/null'
$sudo chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
$sudo chmod 0700 /etc/munge /var/log/munge /var/lib/munge
$sudo chmod 0400 /etc/munge/munge.key
$sudo chmod 0755 /run/munge
$sudo runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
cp /run/munge/munged.pid "$dir/munged.pid"

node=$(slurmd -C | head -1)
cat > "$dir/slurm.conf" <<CONF
ClusterName=pipeline
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MinJobAge=600
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
$sudo slurmctld -f "$dir/slurm.conf"
$sudo slurmd -f "$dir/slurm.conf"
# Ready when the node answers as idle.
for _ in $(seq 100); do
  if SLURM_CONF="$dir/slurm.conf" sinfo -h -o %t 2> /dev/null | grep -q idle; then
    echo "slurm: one node ($host) up; SLURM_CONF=$dir/slurm.conf"
    exit 0
  fi
  sleep 0.2
done
echo "slurm did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
stop
exit 1
