#!/usr/bin/env bash
# A stand-in for the official PyTorch-CUDA 2.7 base image, for machines that cannot pull it
# (no registry reachable). CPU test stand-in only: it has no CUDA toolkit of its own, only the
# same torch/torchvision wheels as the lock (which run on a CPU). `make docker-base-standin`.
#
#   scripts/docker/standin_base.sh TAG
#
# Debian bookworm from Debian's packages (debootstrap), Python 3.11 in a venv at /opt/conda (the
# official image's interpreter path), torch, torchvision and what they require at the lock's pins
# (downloaded with the host's pip configuration), g++ and Python's headers (torch.compile's
# Inductor builds its CPU kernels with them; the official image's conda Python has the headers
# but no compiler, which the Dockerfile adds there),
# `docker import`-ed as TAG. Nothing is built if
# TAG exists already; the Makefile puts the hash of the lock and of this script into TAG, so
# it is rebuilt only when either changes. Needs root (debootstrap, chroot, mount) and about 15 GB of free disk while it runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
tag="${1:?usage: scripts/docker/standin_base.sh TAG}"
mirror="${STANDIN_MIRROR:-http://deb.debian.org/debian}"
fail() { echo "error: $*" >&2; exit 2; }

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "stand-in base image: $tag (already built for this lock)"
    exit 0
fi
[ "$(id -u)" = 0 ] || fail "building the stand-in base needs root (debootstrap, chroot): sudo make docker-base-standin"
command -v debootstrap >/dev/null || fail "debootstrap not found: apt-get install debootstrap"

work="$(mktemp -d /var/tmp/standin-base.XXXXXX)"
rootfs="$work/rootfs"
cleanup() {
    mountpoint -q "$rootfs/mnt" 2>/dev/null && umount "$rootfs/mnt"
    for fs in proc dev; do mountpoint -q "$rootfs/$fs" 2>/dev/null && umount -l "$rootfs/$fs"; done
    rm -rf "$work"
}
trap cleanup EXIT
started=$SECONDS

echo "[1/4] torch, torchvision and what they require, from requirements.lock (host pip settings)"
python3 scripts/docker/requirements.py download-standin requirements.lock "$work/wheels" >/dev/null

echo "[2/4] Debian bookworm with Python 3.11 ($mirror)"
keep_log() { cp "$work/$1.log" "/tmp/standin-$1.log"; fail "$1 failed; its log: /tmp/standin-$1.log"; }
debootstrap --variant=minbase --include=python3.11,ca-certificates bookworm "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || keep_log debootstrap
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
chroot "$rootfs" sh -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
    --no-install-recommends python3.11-venv python3.11-dev make git procps g++ && apt-get clean' \
    >"$work/apt.log" 2>&1 || keep_log apt
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs/etc/resolv.conf"
echo "[3/4] a venv at /opt/conda with the wheels, installed offline"
mount --bind "$work/wheels" "$rootfs/mnt"
chroot "$rootfs" /usr/bin/python3.11 -m venv /opt/conda
chroot "$rootfs" sh -c '/opt/conda/bin/pip install --quiet --no-index --no-deps --no-cache-dir \
    --disable-pip-version-check /mnt/*.whl'
umount "$rootfs/mnt"

echo "[4/4] docker import as $tag"
tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "CPU stand-in for the PyTorch-CUDA 2.7 image (requirements.lock)" \
    - "$tag" >/dev/null
echo "stand-in base image: $tag ($(( SECONDS - started )) s)"
