"""Several processes on one run (`torchrun --nproc_per_node N -m qbench run ...`): HF Trainer shares each batch
between them (DDP; gloo on CPU); qbench makes process 0 the only writer of records, predictions, packed files and
the FP cache, and keeps the processes in step around what it writes. One process: both are no-ops."""

from __future__ import annotations

import os

import torch.distributed as dist


def is_main() -> bool:
    """True in process 0 (or with no torchrun at all: RANK is unset)."""
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait until every process gets here (once Trainer has set up the process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
