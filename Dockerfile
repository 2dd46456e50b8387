# The training image: the official PyTorch-CUDA 2.7 image plus exactly the packages of the lock.
# Pick another CUDA (cuda11.8 / cuda12.8) or the -devel image with
#   make docker-build BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-devel
# Without a registry, `make docker-base-standin` builds a CPU stand-in base to pass instead.
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}

# PYTHONHASHSEED and CUBLAS_WORKSPACE_CONFIG must exist before the interpreter and CUDA start;
# NO_ALBUMENTATIONS_UPDATE stops albumentations from asking PyPI for updates on import.
# No OMP_NUM_THREADS: the launcher sets it as on the host (torchrun: 1 per process), so the
# container computes what the host computes.
ENV PYTHONHASHSEED=0 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CUBLAS_WORKSPACE_CONFIG=:4096:8 \
    NO_ALBUMENTATIONS_UPDATE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/trainer

WORKDIR /workspace

# torch.compile (trainer.compile) needs a C++ compiler: Inductor builds its CPU kernels with it,
# Triton its GPU launcher. The -runtime image has none; -devel images and the stand-in base do,
# and then nothing is installed (an air-gapped build needs one of those).
# hadolint ignore=DL3008
RUN if ! command -v g++ >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends g++ \
        && rm -rf /var/lib/apt/lists/*; fi

# Requirements before code: editing the code does not reinstall packages. wheelhouse/ holds the
# lock's wheels when `make wheelhouse` fetched them on the host (behind a proxy, air-gapped
# clusters): then nothing is downloaded inside the build. Empty, pip downloads from the index.
COPY requirements.lock requirements-dev.lock scripts/docker/requirements.py /tmp/lock/
COPY wheelhouse/ /tmp/wheelhouse/
# hadolint ignore=SC2086
RUN python /tmp/lock/requirements.py check-image /tmp/lock/requirements.lock \
    && python /tmp/lock/requirements.py install-list /tmp/lock/requirements-dev.lock > /tmp/lock/install.txt \
    && if ls /tmp/wheelhouse/*.whl >/dev/null 2>&1; then offline="--no-index --find-links /tmp/wheelhouse"; else offline=""; fi \
    && pip install --no-cache-dir --no-deps $offline -r /tmp/lock/install.txt \
    && python /tmp/lock/requirements.py check-installed /tmp/lock/requirements-dev.lock \
    && python /tmp/lock/requirements.py check-image /tmp/lock/requirements.lock \
    && rm -rf /tmp/lock /tmp/wheelhouse

ARG USER_UID=1000
ARG USER_GID=1000
RUN groupadd --gid "${USER_GID}" trainer \
    && useradd --uid "${USER_UID}" --gid "${USER_GID}" --create-home --home-dir /home/trainer trainer \
    && mkdir -p /workspace/runs /workspace/datasets \
    && chown -R trainer:trainer /workspace

COPY --chown=trainer:trainer . /workspace
ARG GIT_COMMIT=unknown
ENV TEMPLATE_GIT_COMMIT=${GIT_COMMIT}

USER ${USER_UID}:${USER_GID}
CMD ["python", "train.py", "--help"]
