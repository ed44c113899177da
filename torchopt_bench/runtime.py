"""Where a run lives and what it runs on: paths, device, dtype and seeds."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = [
    "PACKAGE_DIR",
    "config_dir",
    "project_root",
    "resolve_device",
    "resolve_dtype",
    "resolve_user_path",
    "seed_everything",
]

PACKAGE_DIR = Path(__file__).resolve().parent

_DTYPES = {
    "float64": torch.float64,
    "double": torch.float64,
    "float32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "half": torch.float16,
}


def config_dir() -> Path:
    """The Hydra config tree: ``conf/`` beside the package in a checkout, or the copy
    inside the package in an installed wheel."""
    checkout = PACKAGE_DIR.parent / "conf"
    return checkout if checkout.is_dir() else PACKAGE_DIR / "conf"


def project_root() -> Path:
    """The directory whose ``runs/`` receives the outputs.

    ``TORCHOPT_BENCH_ROOT`` if set; else the checkout the package was installed from (so
    runs land in the project's ``runs/`` whatever directory they are started from); else
    the current directory.
    """
    if env := os.environ.get("TORCHOPT_BENCH_ROOT"):
        return Path(env).expanduser().resolve()
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "conf").is_dir():
        return checkout
    return Path.cwd()


def resolve_user_path(path: str | os.PathLike[str], start_dir: str | os.PathLike[str]) -> Path:
    """A path the user typed: ``~`` expanded, relative paths taken against the directory the
    command was started in (``start_dir``), not the run directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (Path(start_dir) / p).resolve()


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU; an explicit device must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"Invalid device {device!r}: use auto, cpu, cuda or cuda:N ({err})"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device} was asked for but CUDA is not available on this machine; "
                "use device=auto or device=cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    return dev


def resolve_dtype(dtype: str | None, default: torch.dtype) -> torch.dtype:
    """A dtype by name (``float64``, ``float32``, ...); None means the task's default."""
    if dtype is None:
        return default
    try:
        return _DTYPES[str(dtype)]
    except KeyError:
        raise ValueError(
            f"Invalid dtype {dtype!r}: choose one of {', '.join(sorted(_DTYPES))} "
            "or null for the task's default"
        ) from None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global generator, for code that uses it
    torch.manual_seed(seed)
