"""Train the tiny job in this process with make gpu-check's trainer (scripts/gpu_check.py's
`in_process_trainer`, built through runtime/assembly.py) and print its final weights' digest:
it must be train.py's, bit for bit.

    python tests/helpers/in_process_run.py key=value ...
"""

from __future__ import annotations

import sys

import torch

from configs import load_config
from runtime.provenance import state_dict_sha256
from scripts.gpu_check import in_process_trainer


def main() -> None:
    config = load_config("configs/default.yaml", "debug", None, sys.argv[1:])
    trainer = in_process_trainer(config, torch.device("cpu"))
    trainer.fit()
    print(state_dict_sha256(trainer.model.state_dict()), flush=True)


if __name__ == "__main__":
    main()
