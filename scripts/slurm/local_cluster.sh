#!/usr/bin/env bash
# A one-node SLURM on this machine, for the tests and for trying the cluster path:
#
#   scripts/slurm/local_cluster.sh up       start munge, slurmctld and slurmd; prints the
#                                           `export SLURM_CONF=...` that clients need
#   scripts/slurm/local_cluster.sh status   is it up, and the node as sinfo sees it
#   scripts/slurm/local_cluster.sh down     stop all three; nothing is left running
#
# It installs nothing: it needs Debian's slurmctld, slurmd, slurm-client and munge (22.05), which
# .ci/run installs with their services' start blocked (a policy-rc.d that exits 101). Everything
# it writes (munge key, slurm.conf, state, spool, logs, pid files) lives under one folder,
# $LOCAL_SLURM_DIR (default /tmp/local-slurm-$UID), and the daemons listen on free ports, so it
# neither reads nor disturbs a SLURM already configured on the machine. SlurmUser is the calling
# user; slurmd wants root, as on any cluster.
set -uo pipefail
dir="${LOCAL_SLURM_DIR:-/tmp/local-slurm-$(id -u)}"
conf="$dir/slurm.conf"
fail() { echo "error: $*" >&2; exit 2; }
running() { [ -f "$dir/$1.pid" ] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

up() {
    for program in munged slurmctld slurmd sinfo; do
        command -v "$program" >/dev/null \
            || fail "$program not found: apt-get install slurmctld slurmd slurm-client munge"
    done
    if running slurmctld && running slurmd && running munged; then
        echo "local SLURM already up; export SLURM_CONF=$conf"
        return 0
    fi
    down >/dev/null 2>&1
    mkdir -p "$dir"/{state,spool,munge}
    chmod 700 "$dir/munge"
    [ -f "$dir/munge/munge.key" ] || dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 2>/dev/null
    chmod 400 "$dir/munge/munge.key"
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/seed" \
        || fail "munged did not start (see $dir/munged.log)"
    node="$(slurmd -C | head -n 1)"
    cat >"$conf" <<CONF
# Written by scripts/slurm/local_cluster.sh: a one-node cluster, all state under $dir.
ClusterName=local
SlurmctldHost=$(hostname -s)
SlurmUser=$(id -un)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
$node
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    SLURM_CONF="$conf" slurmctld -f "$conf" || fail "slurmctld did not start (see $dir/slurmctld.log)"
    SLURM_CONF="$conf" slurmd -f "$conf" || fail "slurmd did not start (see $dir/slurmd.log)"
    for _ in $(seq 100); do
        state="$(SLURM_CONF="$conf" sinfo -h -o %t 2>/dev/null)"
        [ "$state" = "idle" ] && { echo "local SLURM up; export SLURM_CONF=$conf"; return 0; }
        sleep 0.2
    done
    fail "the node did not become idle within 20 s (state: ${state:-none}; logs in $dir)"
}

down() {
    for daemon in slurmd slurmctld munged; do
        if running "$daemon"; then
            pid="$(cat "$dir/$daemon.pid")"
            kill "$pid" 2>/dev/null
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null
        fi
        rm -f "$dir/$daemon.pid"
    done
    # slurmstepd processes of jobs still running when the daemons stopped
    pkill -9 -f "slurmstepd.*$dir" 2>/dev/null
    echo "local SLURM down"
}

status() {
    local all=0
    for daemon in munged slurmctld slurmd; do
        if running "$daemon"; then echo "$daemon: running"; else echo "$daemon: stopped"; all=1; fi
    done
    [ "$all" = 0 ] && SLURM_CONF="$conf" sinfo
    return "$all"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*) fail "usage: scripts/slurm/local_cluster.sh up|down|status" ;;
esac
