"""Shared helpers: running the command-line application as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "higgs" / "atlas-higgs-challenge-2014-v2-sample.csv"


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str
    run_dir: Path

    @property
    def summary(self) -> dict:
        return json.loads((self.run_dir / "summary.json").read_text())

    @property
    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.run_dir / "history.csv")


@pytest.fixture
def cli(tmp_path: Path):
    """Run ``python -m torchopt_bench`` with overrides in a fresh process, outputs under
    ``tmp_path``; returns a :class:`CliResult`."""

    def invoke(
        *overrides: str,
        cwd: Path | None = None,
        multirun: bool = False,
        run_dir: Path | None = None,
        env: dict | None = None,
    ) -> CliResult:
        run_dir = run_dir or tmp_path / ("sweep" if multirun else "run")
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        args = [sys.executable, "-m", "torchopt_bench"]
        args += ["-m"] if multirun else []
        args += [*overrides, f"{key}={run_dir}", "trainer.progress=false"]
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        proc = subprocess.run(
            args,
            cwd=cwd or tmp_path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr, run_dir)

    return invoke
