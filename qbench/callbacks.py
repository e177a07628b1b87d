"""Hydra callbacks: when a multirun ends, print the table of its study folder (`qbench table` on the sweep dir)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from qbench.errors import QbenchError


class PrintTable(Callback):
    """Prints `qbench table <hydra.sweep.dir>` after the last cell of a multirun (on the launching machine, so it
    works with every launcher). The table holds every completed record of the study folder, earlier sweeps'
    included: the folder is the study."""

    def __init__(self, rows: str = "task", cols: str = "scheme,bits", digits: int = 1) -> None:
        self.rows, self.cols, self.digits = rows.split(","), cols.split(","), digits

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from qbench.report import table  # on use: pandas and matplotlib stay out of every job's start-up

        sweep = Path(config.hydra.sweep.dir)
        try:
            text = table([str(sweep)], self.rows, self.cols, "markdown", self.digits, None)
        except QbenchError as e:  # every cell failed: the failed records say why
            print(f"\nno table for {sweep}: {e}")
            return
        print(f"\n{text}\n\n(rebuild: qbench table {sweep})")
