"""What a run records: TensorBoard events, ``history.csv`` and ``summary.json``.

Everything a run writes goes into its own directory. TensorBoard tags live in namespaces
(``train/loss``, ``val/auc``, ``opt/grad_norm``); the hyperparameters and the final metrics
go to the HParams plugin so that the runs of a sweep can be compared side by side.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

log = logging.getLogger(__name__)

__all__ = ["RunRecorder", "describe_file", "flatten", "to_jsonable"]


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of ``a.b.c`` keys."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def to_jsonable(value: Any, nonfinite_as_text: bool = False) -> Any:
    """Numbers, arrays and tensors as plain JSON values.

    Strict JSON has no infinity or NaN, so a float that is not finite becomes ``None``
    (``null`` in the file); whatever made it so is said by other fields (a diverged run's
    ``status`` and ``diverged_reason``). ``nonfinite_as_text`` writes such a float as text
    instead (``"inf"``, ``"-inf"``, ``"nan"``), for settings such as a config's ``.inf``,
    whose value a ``null`` would not tell.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value) if nonfinite_as_text else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, nonfinite_as_text) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v, nonfinite_as_text) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def describe_file(path: Path) -> str:
    """``path (size bytes, sha256 prefix)`` for log lines about files written."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"{path} ({path.stat().st_size:,} bytes, sha256 {digest[:12]})"


def _hparam_value(value: Any) -> int | float | str | bool:
    if isinstance(value, bool | int | float | str):
        return value
    return "null" if value is None else str(value)


class RunRecorder:
    """The outputs of one run: a TensorBoard writer, the history rows and the summary.

    Use it as a context manager: the event file is flushed and closed even when the run
    fails.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.run_dir)) if tensorboard else None
        self.history: list[dict[str, Any]] = []

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None

    # -- scalars and figures -----------------------------------------------------------

    def log_row(self, step: int, row: Mapping[str, Any], tensorboard: bool = True) -> None:
        """Append one history row and send its numeric entries to TensorBoard."""
        self.history.append(dict(row))
        if self.writer is None or not tensorboard:
            return
        for tag, value in row.items():
            if tag == "step" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def log_figure(self, tag: str, figure: Any, step: int = 0) -> None:
        if self.writer is not None:
            self.writer.add_figure(tag, figure, global_step=step, close=False)

    def log_text(self, tag: str, text: str) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text)

    def log_hparams(self, hparam_dict: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        """Hyperparameters and final metrics for the HParams dashboard, in this run's own
        event file (metrics that are not finite numbers are left out)."""
        if self.writer is None:
            return
        hp = {k: _hparam_value(v) for k, v in hparam_dict.items()}
        finite = {
            f"hparam/{k}": float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        exp, ssi, sei = hparams(hp, finite)
        file_writer = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
        for tag, value in finite.items():
            self.writer.add_scalar(tag, value)

    # -- files -----------------------------------------------------------------------------

    def write_history(self) -> Path:
        """``history.csv``: one row per logged step. A value that was measured and is not a
        number reads ``nan``; an empty cell is a value not measured at that step (the
        validation columns between evaluations, say)."""
        path = self.run_dir / "history.csv"
        rows = [
            {k: "nan" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
            for row in self.history
        ]
        pd.DataFrame(rows).to_csv(path, index=False)
        return path

    def write_summary(self, summary: Mapping[str, Any], name: str = "summary.json") -> Path:
        path = self.run_dir / name
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(to_jsonable(summary), indent=2, allow_nan=False) + "\n")
        tmp.replace(path)
        return path
