#!/usr/bin/env bash
# Start a one-node Slurm cluster on this machine, for the tests of `sitedist sync --executor slurm`
# (admin_docs/slurm.md). Run as root; no systemd needed (it suits a container). Undo with
# .ci/slurm-down.sh, which stops only what this script started.
#
# What it does, in order (an admin can follow it by hand):
#   1. If `sinfo` already answers, a cluster is configured and running: it changes nothing.
#   2. Writes /etc/slurm/slurm.conf for one node, this host, with the CPUs and memory `slurmd -C`
#      reports; proctrack/linuxproc (no cgroups), no accounting (no slurmdbd, no sacct), select/cons_tres
#      so that several builds share the node by CPU. An existing slurm.conf not written by this script
#      is left alone and the script stops: that machine has a Slurm of its own.
#   3. Creates the munge key if there is none, and starts munged as user munge.
#   4. Starts slurmctld and slurmd (as root), and waits until `sinfo` shows the node idle.
# State, logs and the list of started daemons go to $SITEDIST_SLURM_DIR (default /var/tmp/sitedist-slurm).
set -euo pipefail

state=${SITEDIST_SLURM_DIR:-/var/tmp/sitedist-slurm}
conf=/etc/slurm/slurm.conf
mark="# written by sitedist .ci/slurm-up.sh"

if timeout 10 sinfo -h >/dev/null 2>&1; then
  echo "slurm-up: sinfo answers already; using the running cluster, starting nothing"
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "slurm-up: run as root (it starts munged, slurmctld and slurmd)" >&2
  exit 1
fi
for tool in slurmd slurmctld munged sinfo scontrol; do
  command -v "$tool" >/dev/null || { echo "slurm-up: $tool not found: apt-get install slurmctld slurmd slurm-client munge" >&2; exit 1; }
done
if [[ -e $conf ]] && ! grep -qF "$mark" "$conf"; then
  echo "slurm-up: $conf exists and was not written by this script; start that cluster instead" >&2
  exit 1
fi

mkdir -p "$state"/{ctld,slurmd,log}
: >>"$state/started"

# --- 2. slurm.conf ---------------------------------------------------------------------------------
node_line=$(slurmd -C | head -n1)     # NodeName=<host> CPUs=.. Boards=.. ... RealMemory=..
node=$(sed -E 's/^NodeName=([^ ]+).*/\1/' <<<"$node_line")
[[ -e $conf ]] || echo "$conf" >>"$state/created"
mkdir -p /etc/slurm
cat >"$conf" <<EOF
$mark; remove it with .ci/slurm-down.sh
ClusterName=sitedist
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# No cgroups in a container: track a job's processes through their parent process ids.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# No accounting: no slurmdbd, no sacct; sitedist learns each job's outcome without it.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Start a job as soon as its dependencies end (the default waits up to 3 s to batch submissions).
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
# A cancelled or timed-out job gets SIGTERM, then SIGKILL 5 s later.
KillWait=5
# Finished jobs stay visible to scontrol for 5 minutes.
MinJobAge=300
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
$node_line State=UNKNOWN
PartitionName=main Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF

# --- 3. munge ----------------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
  install -d -o munge -g munge -m 0700 /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  echo "/etc/munge/munge.key" >>"$state/created"
fi
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do [[ -s /run/munge/munged.pid ]] && break; sleep 0.1; done
  echo "munged /run/munge/munged.pid" >>"$state/started"
fi

# --- 4. slurmctld, slurmd --------------------------------------------------------------------------
if ! pgrep -F "$state/slurmctld.pid" slurmctld >/dev/null 2>&1; then
  slurmctld
  echo "slurmctld $state/slurmctld.pid" >>"$state/started"
fi
if ! pgrep -F "$state/slurmd.pid" slurmd >/dev/null 2>&1; then
  slurmd
  echo "slurmd $state/slurmd.pid" >>"$state/started"
fi

for i in $(seq 120); do
  status=$(sinfo -h -n "$node" -o %t 2>/dev/null || true)
  case $status in
    idle|mix|alloc) echo "slurm-up: node $node is $status ($(sinfo -h -n "$node" -o '%c CPUs, %m MB'))"; exit 0 ;;
    down*|drain*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
  esac
  sleep 0.5
done
echo "slurm-up: the node did not become idle in 60 s; see $state/log/" >&2
tail -n 20 "$state"/log/*.log >&2 || true
exit 1
