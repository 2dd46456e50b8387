#!/usr/bin/env bash
# What the container targets check before they call docker, each failure one line that says
# what to do (make docker-*):
#
#   scripts/docker/checks.sh engine                a Docker engine answers
#   scripts/docker/checks.sh image IMAGE           IMAGE was built here
#   scripts/docker/checks.sh base IMAGE            IMAGE is here or can be pulled
#   scripts/docker/checks.sh gpus GPUS             prints the --gpus flag for GPUS: auto (GPUs
#                                                  when the NVIDIA container runtime and a GPU are
#                                                  there), none, all, or a device list such as
#                                                  '"device=0,1"'
set -uo pipefail
fail() { echo "error: $*" >&2; exit 2; }
last_line() { printf '%s\n' "$1" | sed '/^[[:space:]]*$/d' | tail -n 1; }

case "${1:-}" in
engine)
    command -v docker >/dev/null \
        || fail "docker not found: install Docker Engine, or train without a container (make train)"
    out="$(docker info 2>&1 >/dev/null)" \
        || fail "no Docker engine answers ($(last_line "$out")): start it (systemctl start docker, or dockerd as root)"
    ;;
image)
    docker image inspect "$2" >/dev/null 2>&1 || fail "no image $2 here: build it with make docker-build"
    ;;
base)
    docker image inspect "$2" >/dev/null 2>&1 && exit 0
    out="$(docker pull -q "$2" 2>&1)" \
        || fail "base image $2 is neither here nor pullable ($(last_line "$out")); without a registry, make docker-base-standin builds a CPU stand-in to pass as BASE_IMAGE"
    ;;
gpus)
    case "${2:-auto}" in
    none) ;;
    auto)
        runtime="$(docker info --format '{{json .Runtimes}}' 2>/dev/null)"
        if { [[ "$runtime" == *nvidia* ]] || command -v nvidia-container-cli >/dev/null; } \
            && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
            echo "--gpus all"
        fi
        ;;
    *) echo "--gpus '$2'" ;;
    esac
    ;;
*)
    fail "usage: scripts/docker/checks.sh engine | image IMAGE | base IMAGE | gpus GPUS"
    ;;
esac
