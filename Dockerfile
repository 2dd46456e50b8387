# syntax=docker/dockerfile:1
# The training image: the official PyTorch-CUDA 2.7 image plus exactly the packages of the lock.
# Pick another CUDA (cuda11.8 / cuda12.8) or -devel (needed for torch.compile) with
#   make docker-build BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-devel
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}

# PYTHONHASHSEED and CUBLAS_WORKSPACE_CONFIG must exist before the interpreter and CUDA start.
ENV PYTHONHASHSEED=0 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CUBLAS_WORKSPACE_CONFIG=:4096:8 \
    OMP_NUM_THREADS=4 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/trainer

WORKDIR /workspace

# Requirements before code: editing the code does not reinstall packages.
COPY requirements.lock requirements-dev.lock scripts/container_requirements.py /tmp/lock/
RUN python /tmp/lock/container_requirements.py --check /tmp/lock/requirements.lock \
    && python /tmp/lock/container_requirements.py /tmp/lock/requirements-dev.lock > /tmp/lock/install.txt \
    && pip install --no-cache-dir --no-deps -r /tmp/lock/install.txt \
    && python /tmp/lock/container_requirements.py --check /tmp/lock/requirements.lock \
    && rm -rf /tmp/lock

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
