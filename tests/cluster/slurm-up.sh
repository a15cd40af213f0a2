#!/usr/bin/env bash
# A single-node SLURM cluster for tests/test_slurm.py: installs the Debian packages (once), writes the
# configuration, starts munged, slurmctld and slurmd, and waits until the node is idle. Idempotent: a
# second run finds everything in place and returns in about a second. Needs root and (the first time)
# the Debian package archive; without them it exits non-zero with a one-line reason on stderr.
#
# The node is this machine's short host name with all its CPUs, a bit less memory than it has, and one
# GPU advertised through gres (gres.conf points it at /dev/null: the tests check what is requested and
# granted, not a card). No accounting daemon: run snakemake with `--slurm-status-command squeue`.
# Stop it with slurm-down.sh.
set -euo pipefail

fail() { echo "slurm-up: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (it installs packages and starts daemons)"

HOST=$(hostname -s)
CPUS=$(nproc)
MEM_TOTAL=$(free -m | awk '/^Mem:/ {print $2}')
REAL_MEM=$((MEM_TOTAL * 9 / 10))
PARTITION=${SLURM_TEST_PARTITION:-main}
CONF_DIR=/etc/slurm
WAIT_S=${SLURM_UP_WAIT_S:-60}

# -- packages --------------------------------------------------------------------------------------
PACKAGES=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || fail "packages ${missing[*]} are missing and there is no apt-get"
  export DEBIAN_FRONTEND=noninteractive
  # the archive's index may be stale or absent: refresh it once, bounded
  timeout -k 10 180 apt-get update -qq >/tmp/slurm-up.apt.log 2>&1 \
    || fail "apt-get update failed (package archive unreachable?), see /tmp/slurm-up.apt.log"
  timeout -k 10 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >>/tmp/slurm-up.apt.log 2>&1 \
    || fail "apt-get install ${missing[*]} failed, see /tmp/slurm-up.apt.log"
fi
for b in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd sinfo scontrol; do
  command -v "$b" >/dev/null || fail "$b not found after installing ${PACKAGES[*]}"
done
id slurm >/dev/null 2>&1 || fail "no slurm user after installing the packages"
id munge >/dev/null 2>&1 || fail "no munge user after installing the packages"

# -- configuration ---------------------------------------------------------------------------------
mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
chown slurm:slurm /var/spool/slurmctld /var/log/slurm

new_conf=$(mktemp)
new_gres=$(mktemp)
trap 'rm -f "$new_conf" "$new_gres"' EXIT
cat >"$new_conf" <<EOF
# Written by tests/cluster/slurm-up.sh: a one-node test cluster (no cgroups, no accounting daemon).
ClusterName=warmstart-test
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
# (AccountingStorageTRES=gres/gpu would list GPUs in a job's TRES, but slurmctld refuses it without
# slurmdbd: a job's GPU request shows as TresPerJob=gres:gpu:N instead)
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# jobs are not requeued unless they ask (sbatch --requeue), as on many clusters: the tests see the profile's flag
JobRequeue=0
# finished jobs stay visible to squeue and "scontrol show job" for an hour (the tests read them back)
MinJobAge=3600
GresTypes=gpu
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${REAL_MEM} Gres=gpu:1 State=UNKNOWN
PartitionName=${PARTITION} Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$new_gres" <<EOF
# Written by tests/cluster/slurm-up.sh: one advertised GPU without a device behind it.
NodeName=${HOST} Name=gpu File=/dev/null
EOF

changed=0
install_if_changed() {  # $1 new file, $2 destination
  if ! cmp -s "$1" "$2"; then
    install -m 644 "$1" "$2"
    changed=1
  fi
}
# slurm-down.sh parks slurm.conf aside (so that `scontrol` fails at once while the cluster is down)
if [ -f "$CONF_DIR/slurm.conf.down" ] && [ ! -f "$CONF_DIR/slurm.conf" ]; then
  mv "$CONF_DIR/slurm.conf.down" "$CONF_DIR/slurm.conf"
fi
install_if_changed "$new_conf" "$CONF_DIR/slurm.conf"
install_if_changed "$new_gres" "$CONF_DIR/gres.conf"

# -- daemons ---------------------------------------------------------------------------------------
running_pid() {  # $1 executable: the pid of the daemon running it, if any
  local exe d
  exe=$(readlink -f "$1")
  for d in /proc/[0-9]*; do
    [ "$(readlink "$d/exe" 2>/dev/null)" = "$exe" ] || continue
    # not a helper forked by the daemon (slurmctld's slurmscriptd runs the same executable)
    [ "$(readlink "/proc/$(awk '{print $4}' "$d/stat" 2>/dev/null)/exe" 2>/dev/null)" != "$exe" ] || continue
    echo "${d#/proc/}"
    return 0
  done
  return 1
}
alive() {  # $1 pid file, $2 executable: is the process named in the pid file running that executable?
  local pid
  if [ -s "$1" ]; then
    pid=$(cat "$1")
    [ -d "/proc/$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$2")" ] && return 0
  fi
  # a lost or stale pid file while the daemon still runs (a start that failed over a running one
  # overwrites it): write the running daemon's pid back, so that slurm-down.sh can stop it
  pid=$(running_pid "$2") || return 1
  echo "$pid" >"$1"
}
stop() {  # $1 pid file, $2 executable
  if alive "$1" "$2"; then
    local pid
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
    [ -d "/proc/$pid" ] && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

if [ ! -s /etc/munge/munge.key ]; then
  if command -v mungekey >/dev/null; then mungekey --create --keyfile /etc/munge/munge.key
  else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge
chown munge:munge /run/munge
chmod 755 /run/munge
if ! alive /run/munge/munged.pid /usr/sbin/munged; then
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
  runuser -u munge -- /usr/sbin/munged || fail "munged did not start (see /var/log/munge/munged.log)"
fi

if [ "$changed" = 1 ]; then  # a daemon running with an older configuration is restarted
  stop /run/slurmd.pid /usr/sbin/slurmd
  stop /run/slurmctld.pid /usr/sbin/slurmctld
fi
if ! alive /run/slurmctld.pid /usr/sbin/slurmctld; then
  rm -f /run/slurmctld.pid
  /usr/sbin/slurmctld || fail "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
fi
if ! alive /run/slurmd.pid /usr/sbin/slurmd; then
  rm -f /run/slurmd.pid
  /usr/sbin/slurmd || fail "slurmd did not start (see /var/log/slurm/slurmd.log)"
fi

# -- wait until the node takes jobs ----------------------------------------------------------------
deadline=$((SECONDS + WAIT_S))
resumed=0
state=
while [ $SECONDS -lt $deadline ]; do
  # a daemon that died after daemonising (a fatal configuration error) will not come back: say why now
  for d in slurmctld slurmd; do
    if ! alive /run/$d.pid /usr/sbin/$d; then
      fail "$d exited after starting: $(tail -n 50 /var/log/slurm/$d.log 2>/dev/null | grep fatal | tail -n1)" \
        "(see /var/log/slurm/$d.log)"
    fi
  done
  state=$(timeout -k 2 5 sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1 || true)
  case "$state" in
    idle) exit 0 ;;
    mixed | allocated | completing) exit 0 ;;  # up, and already running someone's jobs
    down* | drain* | drained*)  # e.g. left down by an unclean stop: put it back in service once
      if [ "$resumed" = 0 ]; then
        timeout -k 2 5 scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
        resumed=1
      fi ;;
  esac
  sleep 0.5
done
fail "node $HOST not idle after ${WAIT_S}s (last state: '${state:-none}'; see /var/log/slurm/)"
