#!/usr/bin/env bash
# Stop what .ci/slurm-up.sh started (and only that), and remove the files it created.
set -uo pipefail

state=${SITEDIST_SLURM_DIR:-/var/tmp/sitedist-slurm}
[[ -f $state/started ]] || { echo "slurm-down: nothing was started by slurm-up.sh"; exit 0; }

# Stop in reverse order of starting: slurmd, slurmctld, munged.
tac "$state/started" | while read -r name pidfile; do
  [[ -n ${name:-} ]] || continue
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [[ -n $pid ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "slurm-down: stopped $name ($pid)"
  fi
done
rm -f "$state/started"
if [[ -f $state/created ]]; then
  while read -r path; do rm -f "$path"; done <"$state/created"
  rm -f "$state/created"
fi
