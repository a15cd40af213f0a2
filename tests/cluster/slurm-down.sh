#!/usr/bin/env bash
# Stops the test cluster of slurm-up.sh: slurmd, slurmctld and munged, each by its PID file, and removes
# stale PID files. Idempotent: with nothing running it only tidies up.
#
# While the SLURM client is installed and /etc/slurm/slurm.conf names a controller that is down, every
# `snakemake` command (even `--version`) waits about 9 s: the SLURM executor plugin runs
# `scontrol show config` when it loads. So the configuration is parked as slurm.conf.down (slurm-up.sh
# puts it back): without it, scontrol fails at once and snakemake is not slowed.
set -uo pipefail

[ "$(id -u)" = 0 ] || { echo "slurm-down: must run as root" >&2; exit 1; }

stop() {  # $1 pid file, $2 executable
  local pid
  if [ -s "$1" ]; then
    pid=$(cat "$1")
    if [ -d "/proc/$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$2")" ]; then
      kill "$pid" 2>/dev/null
      for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
      if [ -d "/proc/$pid" ]; then
        echo "slurm-down: $2 ($pid) ignored SIGTERM for 10 s; killing it" >&2
        kill -9 "$pid" 2>/dev/null
        sleep 0.2
      fi
    fi
  fi
  rm -f "$1"
}

stop /run/slurmd.pid /usr/sbin/slurmd
stop /run/slurmctld.pid /usr/sbin/slurmctld
stop /run/munge/munged.pid /usr/sbin/munged

if [ -f /etc/slurm/slurm.conf ]; then
  mv -f /etc/slurm/slurm.conf /etc/slurm/slurm.conf.down
fi
exit 0
