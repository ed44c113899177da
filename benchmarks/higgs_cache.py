"""How much the parsed-array cache of the Higgs loader saves: CSV parse against cache load.

Two files are measured, both copied or written into a temporary directory (nothing is written
beside the real data):

* the real 9,998-event sample (``../shared/data/higgs/...-sample.csv``), when it exists;
* a synthetic file with as many rows as the full dataset (818,238) and the same layout,
  made by resampling the sample's rows (or random rows if the sample is absent), written
  as ``.csv`` and as ``.csv.gz``.

For each, "parse" is what a cache miss costs (``read_higgs_csv``: reading and checking the
CSV) and "cache" is what a hit costs (loading the ``.npz`` while the file is hashed in a
second thread to check the cache key). ``load_higgs`` is also timed end to end,
cold (no cache) and warm (cache hit), since splitting and standardising are common to both.

Run from the repository root::

    python -m benchmarks.higgs_cache            # all files
    python -m benchmarks.higgs_cache --rows 100000 --formats csv
"""

from __future__ import annotations

import argparse
import gzip
import io
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from torchopt_bench.data.higgs import (
    BACKGROUND_WEIGHT_TOTAL,
    FEATURES,
    FULL_DATASET_EVENTS,
    LAYOUTS,
    SIGNAL_WEIGHT_TOTAL,
    _cache_path,
    _read_table,
    load_higgs,
    read_higgs_csv,
    renormalize_weights,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "higgs" / "atlas-higgs-challenge-2014-v2-sample.csv"

# Events per KaggleSet in the full file: 250,000 training, 100,000 public, 450,000 private
# leaderboard, the rest unused (Adam-Bourdarios et al. 2015; record 328: 818,238 in all).
_SETS = {"t": 250_000, "b": 100_000, "v": 450_000}


def _row_pool(seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Rows to resample: the text of each row's 30 features, Weight and Label, with the
    weights and the signal flags. From the real sample, or random rows if it is absent."""
    if SAMPLE.is_file():
        text = SAMPLE.read_text()
    else:
        rng = np.random.default_rng(seed)
        n = 10_000
        df = pd.DataFrame(rng.normal(size=(n, 30)).round(3), columns=FEATURES)
        df["PRI_jet_num"] = rng.integers(0, 4, n)
        df.insert(0, "EventId", np.arange(n))
        df["Weight"] = rng.uniform(0.001, 5.0, n)
        df["Label"] = np.where(rng.random(n) < 0.34, "s", "b")
        df["KaggleSet"], df["KaggleWeight"] = "t", 1.0
        buffer = io.StringIO()
        df.to_csv(buffer, index=False)
        text = buffer.getvalue()
    rows = text.splitlines()[1:]
    # EventId first; KaggleSet and KaggleWeight last: keep what lies between.
    middles = [row.split(",", 1)[1].rsplit(",", 2)[0] for row in rows]
    weight = np.array([float(m.rsplit(",", 2)[1]) for m in middles])
    is_signal = np.array([m.endswith(",s") for m in middles])
    return middles, weight, is_signal


def write_synthetic_csv(path: Path, n_rows: int, seed: int = 0) -> None:
    """Write ``n_rows`` events in the opendata-v2 layout to ``path``.

    Rows are drawn with replacement from the real sample, so values, -999 patterns and text
    widths are realistic; KaggleSet follows the full file's proportions and KaggleWeight is
    Weight scaled per set and label to the full-dataset totals, as in the real file.
    """
    rng = np.random.default_rng(seed)
    middles, pool_weight, pool_signal = _row_pool(seed)
    pick = rng.integers(0, len(middles), n_rows)
    weight, is_signal = pool_weight[pick], pool_signal[pick]

    scale = n_rows / FULL_DATASET_EVENTS
    counts = {code: int(round(n * scale)) for code, n in _SETS.items()}
    kaggle_set = np.full(n_rows, "u", dtype="<U1")
    kaggle_set[: counts["t"]] = "t"
    rest = rng.permutation(np.arange(counts["t"], n_rows))
    kaggle_set[rest[: counts["b"]]] = "b"
    kaggle_set[rest[counts["b"] : counts["b"] + counts["v"]]] = "v"

    kaggle_weight = np.empty(n_rows)
    for code in ("t", "b", "v", "u"):
        rows = kaggle_set == code
        if rows.any():
            kaggle_weight[rows] = renormalize_weights(
                weight[rows], is_signal[rows], SIGNAL_WEIGHT_TOTAL, BACKGROUND_WEIGHT_TOTAL
            )

    lines = [",".join(LAYOUTS["opendata-v2"])]
    lines += [
        f"{100_000 + i},{middles[j]},{k},{kw!r}"
        for i, (j, k, kw) in enumerate(zip(pick, kaggle_set, kaggle_weight.tolist()))
    ]
    path.write_text("\n".join(lines) + "\n")


def _best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(path: Path, repeat: int) -> dict[str, float]:
    """Seconds for a parse, a cache hit, and load_higgs cold and warm, on ``path``."""
    _cache_path(path).unlink(missing_ok=True)
    parse_s = _best_of(lambda: read_higgs_csv(path), repeat)
    _read_table(path, None, cache=True)  # writes the cache
    cache_s = _best_of(lambda: _read_table(path, None, cache=True), repeat)
    cold_s = _best_of(lambda: load_higgs(path, cache=False), 1)
    warm_s = _best_of(lambda: load_higgs(path, cache=True), repeat)
    return {
        "bytes": path.stat().st_size,
        "parse": parse_s,
        "cache": cache_s,
        "cold": cold_s,
        "warm": warm_s,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=FULL_DATASET_EVENTS)
    parser.add_argument("--formats", default="csv,csv.gz", help="synthetic file formats")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many timings")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="higgs-cache-") as tmp:
        tmp_dir = Path(tmp)
        files: list[tuple[str, Path]] = []
        if SAMPLE.is_file():
            files.append(("real sample (9,998 rows)", Path(shutil.copy(SAMPLE, tmp_dir))))

        start = time.perf_counter()
        plain = tmp_dir / "synthetic.csv"
        write_synthetic_csv(plain, args.rows)
        formats = [f.strip() for f in args.formats.split(",") if f.strip()]
        if "csv.gz" in formats:
            packed = tmp_dir / "synthetic.csv.gz"
            with plain.open("rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            files.append((f"synthetic .csv.gz ({args.rows:,} rows)", packed))
        if "csv" in formats:
            files.append((f"synthetic .csv ({args.rows:,} rows)", plain))
        print(f"wrote the synthetic files in {time.perf_counter() - start:.1f} s\n")

        header = (
            f"{'file':34s} {'MB':>7s} {'parse s':>8s} {'cache s':>8s} {'ratio':>6s}"
            f" {'load cold s':>12s} {'load warm s':>12s} {'ratio':>6s}"
        )
        print(header)
        print("-" * len(header))
        for name, path in files:
            r = measure(path, args.repeat)
            print(
                f"{name:34s} {r['bytes'] / 1e6:7.1f} {r['parse']:8.3f} {r['cache']:8.3f} "
                f"{r['parse'] / r['cache']:5.1f}x {r['cold']:12.3f} {r['warm']:12.3f} "
                f"{r['cold'] / r['warm']:5.1f}x"
            )


if __name__ == "__main__":
    main()
