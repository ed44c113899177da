r"""The ATLAS Higgs boson machine learning challenge 2014 data: read, check, split, scale.

The data are simulated proton-proton collisions, each event a row of 30 kinematic features
(``DER_*`` derived, ``PRI_*`` primitive), labelled signal (``s``, a Higgs boson decaying to
two taus) or background (``b``), with an importance weight. Two file layouts are read:

* ``opendata-v2``: the CERN Open Data file ``atlas-higgs-challenge-2014-v2.csv[.gz]``
  (record 328, DOI 10.7483/OPENDATA.ATLAS.ZBP2.M5T8; 818,238 events), columns
  ``EventId, <30 features>, Weight, Label, KaggleSet, KaggleWeight``. ``KaggleSet`` is ``t``
  (the 250,000 training events of the Kaggle challenge), ``b`` (the 100,000 events of the
  public leaderboard), ``v`` (the 450,000 of the private leaderboard) or ``u`` (unused).
* ``kaggle-training``: Kaggle's ``training.csv``, columns ``EventId, <30 features>, Weight,
  Label``; all of it is training data.

Missing values
    ``-999.0`` marks a quantity that cannot be computed for the event. It occurs in 11
    columns, in three patterns (checked on the real sample; see the record 328 feature
    descriptions):

    * ``DER_mass_MMC``: missing when the event topology is too far from the expected one for
      the mass estimator to converge (12 % of the sample's events), for any ``PRI_jet_num``.
    * ``PRI_jet_leading_{pt,eta,phi}``: missing exactly when ``PRI_jet_num == 0``.
    * ``PRI_jet_subleading_{pt,eta,phi}``, ``DER_deltaeta_jet_jet``, ``DER_mass_jet_jet``,
      ``DER_prodeta_jet_jet``, ``DER_lep_eta_centrality``: missing exactly when
      ``PRI_jet_num <= 1``.

    (``PRI_jet_all_pt`` is 0, not missing, when there is no jet.) A sentinel of -999 fed to a
    network as a number is a huge outlier, so by default (``missing="impute"``) each missing
    value is replaced by the training split's mean of that column's non-missing values, which
    is 0 after standardisation, and one 0/1 indicator column ``<name>_missing`` is appended per
    column that has missing values in the rows read (11 on real data; they repeat the three
    patterns above, which is harmless). ``missing="sentinel"`` keeps -999 and standardises it
    with the rest, for comparison.

Weights
    ``Weight`` is normalised to the integrated luminosity: within any region of feature space,
    the sum of the weights of the events in it estimates the expected number of events (record
    328). ``KaggleWeight`` is ``Weight`` rescaled, per label, within each KaggleSet, so that
    every set carries the same total signal and background weight as the whole dataset and the
    AMS of the training set, the public and the private leaderboard are comparable (the
    organisers on Kaggle's forum, thread 8129 "Welcome": the public and private weights "have
    been normalized separately correctly so that AMS training = AMS public = AMS private").
    On the real sample ``KaggleWeight / Weight`` is indeed constant per label: 3.257674 for
    signal, 3.279658 for background.

    This loader does the same for its own splits: the weights of every split (train, val,
    test_public, test_private) are scaled, per label, to sum to :data:`SIGNAL_WEIGHT_TOTAL`
    = 691.9886077135781 (signal) and :data:`BACKGROUND_WEIGHT_TOTAL` = 410999.84732187376
    (background). These are the sums of the weights of Kaggle's ``training.csv`` (which is
    ``KaggleWeight`` over KaggleSet ``t``), so the AMS of any split is on the scale of the
    challenge's leaderboard; the same two numbers, to every digit, are the nominal signal and
    background luminosities that the ``normalize_weight`` helper of D. Rousseau and V.
    Estrade's systematics tools for this dataset (2016-2017) rescales its weights to.
    Because the scaling is per label, ``weight="Weight"`` and ``weight="KaggleWeight"`` give
    the same split weights whenever KaggleWeight / Weight is constant per label and set, as
    it is on the real sample.

Splits
    KaggleSet ``t`` rows are split into train and validation, seeded and stratified by label;
    ``b`` rows form ``test_public`` and ``v`` rows ``test_private``; ``u`` rows are dropped.
    When the rows read have no ``b`` or ``v`` rows (the 9,998-event sample, Kaggle's
    training.csv, or a ``max_events`` head of a file that holds only training events), the
    ``t`` rows are split at random, seeded and stratified, into train, val and
    ``test_public`` (``test_private`` is ``None``) and the log says so.

Standardisation
    Each feature column is shifted by the training split's mean and divided by its standard
    deviation (population, ddof=0); the statistics come from the training split only and are
    applied to every split. Missing-value indicators are left as 0/1.

Cache
    Parsing a CSV of 818,238 rows takes seconds; the parsed arrays are therefore saved beside
    the file as ``<file>.cache.npz``, keyed by the file's size and sha256, and loaded instead
    of the CSV on later runs. A changed file has another hash and is parsed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

__all__ = [
    "BACKGROUND_WEIGHT_TOTAL",
    "DEFAULT_SHA256",
    "DEFAULT_URL",
    "FEATURES",
    "LAYOUTS",
    "MISSING_VALUE",
    "SIGNAL_WEIGHT_TOTAL",
    "DataNotFoundError",
    "DownloadError",
    "HiggsData",
    "HiggsDataError",
    "HiggsSplit",
    "download_higgs",
    "check_options",
    "load_higgs",
    "read_higgs_csv",
    "renormalize_weights",
]

logger = logging.getLogger(__name__)

# --- Provenance -------------------------------------------------------------------------
# The file of CERN Open Data record 328 (https://opendata.cern.ch/record/328). Its size and
# checksum are those the portal publishes for it (the record's "files" entry, also in
# cernopendata/opendata.cern.ch, data/records/atlas-higgs-challenge-2014.json): adler32 only,
# no sha256, so the default download is checked against these two.
DEFAULT_URL = "https://opendata.cern.ch/record/328/files/atlas-higgs-challenge-2014-v2.csv.gz"
DEFAULT_SHA256: str | None = None
PORTAL_SIZE = 65_630_848
PORTAL_ADLER32 = "e4717bbe"
#: Events in the full file (record 328, "number_events").
FULL_DATASET_EVENTS = 818_238
SAMPLE_PATH_HINT = "../shared/data/higgs/atlas-higgs-challenge-2014-v2-sample.csv"

#: Total signal and background weight every split is scaled to: the sums of the weights of
#: Kaggle's training.csv, i.e. of KaggleWeight over KaggleSet t (see the module docstring).
#: The digits are those hard-coded in public analysis code of the challenge data (the
#: organisers' systematics tools among them); they could not be re-derived here, as the sum
#: needs the full file.
SIGNAL_WEIGHT_TOTAL = 691.9886077135781
BACKGROUND_WEIGHT_TOTAL = 410999.84732187376

#: The value that marks a feature that cannot be computed for an event.
MISSING_VALUE = -999.0

#: The 30 features, in file order (record 328, "dataset_semantics").
FEATURES: list[str] = [
    "DER_mass_MMC",
    "DER_mass_transverse_met_lep",
    "DER_mass_vis",
    "DER_pt_h",
    "DER_deltaeta_jet_jet",
    "DER_mass_jet_jet",
    "DER_prodeta_jet_jet",
    "DER_deltar_tau_lep",
    "DER_pt_tot",
    "DER_sum_pt",
    "DER_pt_ratio_lep_tau",
    "DER_met_phi_centrality",
    "DER_lep_eta_centrality",
    "PRI_tau_pt",
    "PRI_tau_eta",
    "PRI_tau_phi",
    "PRI_lep_pt",
    "PRI_lep_eta",
    "PRI_lep_phi",
    "PRI_met",
    "PRI_met_phi",
    "PRI_met_sumet",
    "PRI_jet_num",
    "PRI_jet_leading_pt",
    "PRI_jet_leading_eta",
    "PRI_jet_leading_phi",
    "PRI_jet_subleading_pt",
    "PRI_jet_subleading_eta",
    "PRI_jet_subleading_phi",
    "PRI_jet_all_pt",
]

#: Column lists of the two layouts read, by name.
LAYOUTS: dict[str, list[str]] = {
    "opendata-v2": ["EventId", *FEATURES, "Weight", "Label", "KaggleSet", "KaggleWeight"],
    "kaggle-training": ["EventId", *FEATURES, "Weight", "Label"],
}
_LABELS = {"s": 1, "b": 0}
_KAGGLE_SETS = {"t": "training", "b": "public test", "v": "private test", "u": "unused"}
_CACHE_VERSION = 1


# --- Errors -----------------------------------------------------------------------------


class HiggsDataError(ValueError):
    """A Higgs challenge file that cannot be used as it is (the message names the fix)."""


class DataNotFoundError(FileNotFoundError):
    """No Higgs challenge file where one was expected."""


class DownloadError(OSError):
    """A download that failed or did not match its checksum; nothing was written."""


def _resolved(path: Path) -> str:
    resolved = path.resolve()
    return "" if resolved == path else f" (resolved to {resolved})"


def _sample_hint() -> str:
    """Where the real sample lies: its absolute path when it is beside the checkout."""
    from ..runtime import project_root  # imported here: the data layer needs no paths

    sample = (project_root() / SAMPLE_PATH_HINT).resolve()
    if sample.is_file():
        return f"the real 9,998-event sample beside the repository, task.data.path={sample}"
    return (
        "a smaller file in the same layout, such as the real 9,998-event sample where it "
        f"is kept beside the repository (task.data.path=<checkout>/{SAMPLE_PATH_HINT})"
    )


def _directory_message(path: Path) -> str:
    """The error for a data path that is a directory: a file is expected, perhaps one of
    the CSV files inside it."""
    found = sorted(p.name for p in path.glob("*.csv*") if p.is_file() and "cache" not in p.name)
    inside = (
        f"; it holds {', '.join(found[:5])}{', ...' if len(found) > 5 else ''}, e.g. "
        f"task.data.path={path / found[0]}"
        if found
        else f"; it holds no .csv or .csv.gz file. Or use {_sample_hint()}"
    )
    return (
        f"task.data.path={path}{_resolved(path)} is a directory; a data file is expected: the "
        f"challenge CSV (.csv or .csv.gz){inside}"
    )


def _not_found_message(path: Path) -> str:
    return (
        f"No Higgs challenge data file at {path}{_resolved(path)}. Get the data "
        "one of three ways: set task.data.download=true and the full file (818,238 events, "
        "65.6 MB gzipped) is fetched from the CERN Open Data portal and checked; or download "
        f"it yourself from {DEFAULT_URL} (record 328, DOI 10.7483/OPENDATA.ATLAS.ZBP2.M5T8) "
        f"and point task.data.path at it; or use {_sample_hint()} (fine for trying things "
        "out, not for reported results)."
    )


# --- Containers -------------------------------------------------------------------------


@dataclass
class HiggsSplit:
    """One split of the data, ready for a network.

    Attributes:
        X: features, float32 ``(n, d)``, standardised; see :attr:`HiggsData.feature_names`.
        y: labels, float32 ``(n,)``, 1.0 for signal and 0.0 for background.
        w: weights, float64 ``(n,)``, scaled so that the split's signal weights sum to
            :data:`SIGNAL_WEIGHT_TOTAL` and its background weights to
            :data:`BACKGROUND_WEIGHT_TOTAL` (the full-dataset totals).
        event_id: the file's ``EventId`` of each row, int64 ``(n,)``.
        w_file: the weight column as the file holds it, before the scaling, float64
            ``(n,)`` (None when not known).
    """

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray
    event_id: np.ndarray
    w_file: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def n_signal(self) -> int:
        return int(np.count_nonzero(self.y == 1))

    @property
    def n_background(self) -> int:
        return int(np.count_nonzero(self.y == 0))


@dataclass
class HiggsData:
    """The splits of a Higgs challenge file and where they came from.

    Attributes:
        train: the training split (part of KaggleSet ``t``).
        val: the validation split (the rest of KaggleSet ``t``, or part of it).
        test_public: KaggleSet ``b`` (the public leaderboard), or the random test split
            carved from ``t`` when the file has no ``b``/``v`` rows; ``None`` if neither.
        test_private: KaggleSet ``v`` (the private leaderboard), ``None`` if absent.
        feature_names: the names of the columns of ``X``.
        source: what was read: ``path, size, sha256, rows, n_signal, n_background, layout``,
            and ``weight`` (the column used), ``split`` (``"kaggleset"`` or ``"random"``),
            ``missing`` and ``cache`` (``"hit"``, ``"miss"`` or ``"off"``).
        mean: the training-split mean subtracted from each feature column.
        std: the training-split standard deviation each feature column was divided by.
    """

    train: HiggsSplit
    val: HiggsSplit
    test_public: HiggsSplit | None
    test_private: HiggsSplit | None
    feature_names: list[str]
    source: dict[str, Any]
    mean: np.ndarray | None = field(default=None, repr=False)
    std: np.ndarray | None = field(default=None, repr=False)

    @property
    def test(self) -> HiggsSplit | None:
        """The split to report final results on: the private test set if there is one (the
        challenge's final ranking used it), else the public one."""
        return self.test_private if self.test_private is not None else self.test_public

    @property
    def n_features(self) -> int:
        return len(self.feature_names)


@dataclass
class _Table:
    """The parsed content of a file, before splitting: one entry per row."""

    layout: str
    event_id: np.ndarray  # int64
    X: np.ndarray  # float32 (n, 30), -999 kept
    label: np.ndarray  # int8, 1 signal 0 background
    weight: np.ndarray  # float64
    kaggle_weight: np.ndarray | None  # float64, opendata-v2 only
    kaggle_set: np.ndarray | None  # '<U1', opendata-v2 only

    def __len__(self) -> int:
        return len(self.label)

    def head(self, n: int | None) -> _Table:
        if n is None or n >= len(self):
            return self
        return _Table(
            layout=self.layout,
            event_id=self.event_id[:n],
            X=self.X[:n],
            label=self.label[:n],
            weight=self.weight[:n],
            kaggle_weight=None if self.kaggle_weight is None else self.kaggle_weight[:n],
            kaggle_set=None if self.kaggle_set is None else self.kaggle_set[:n],
        )


# --- Reading and checking ---------------------------------------------------------------


def _detect_layout(path: Path, columns: list[str]) -> str:
    """The layout whose columns the header holds, or an error naming what is wrong."""
    for name, expected in LAYOUTS.items():
        if sorted(columns) == sorted(expected):
            return name
    present = set(columns)
    # Name the differences from the layout the header resembles most.
    closest = max(LAYOUTS, key=lambda name: len(present & set(LAYOUTS[name])))
    missing = [c for c in LAYOUTS[closest] if c not in present]
    unexpected = [c for c in columns if c not in set(LAYOUTS[closest])]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected column(s) {', '.join(map(repr, unexpected))}")
    if duplicated:
        problems.append(f"duplicated column(s) {', '.join(duplicated)}")
    raise HiggsDataError(
        f"{path}: the header does not match the {closest} layout: {'; '.join(problems)}. "
        "Expected either the CERN Open Data v2 header (EventId, the 30 DER_*/PRI_* features, "
        "Weight, Label, KaggleSet, KaggleWeight) or Kaggle's training.csv header (EventId, "
        "the 30 features, Weight, Label); use the file as published, with its header line."
    )


def _line(row: int) -> str:
    """Where data row ``row`` (0-based) sits in the file, counting the header as line 1."""
    return f"row {row + 1} (line {row + 2} of the file)"


def _check_numeric(path: Path, df: pd.DataFrame, column: str) -> None:
    values = df[column]
    if not pd.api.types.is_numeric_dtype(values):
        coerced = pd.to_numeric(values, errors="coerce")
        bad = np.flatnonzero(coerced.isna().to_numpy() & values.notna().to_numpy())
        row = int(bad[0]) if len(bad) else 0
        raise HiggsDataError(
            f"{path}: column {column} must be numeric, but {_line(row)} holds "
            f"{values.iloc[row]!r}. Fix or remove that row (missing values are written "
            f"{MISSING_VALUE}, not as text)."
        )
    empty = np.flatnonzero(values.isna().to_numpy())
    if len(empty):
        raise HiggsDataError(
            f"{path}: column {column} is empty in {_line(int(empty[0]))} ({len(empty)} row(s) "
            f"in all); a row with too few fields reads this way too. Every row needs all "
            f"{len(df.columns)} fields; missing values are written {MISSING_VALUE}."
        )
    infinite = np.flatnonzero(np.isinf(values.to_numpy(dtype=np.float64)))
    if len(infinite):
        row = int(infinite[0])
        raise HiggsDataError(
            f"{path}: column {column} holds {float(values.iloc[row])!r} in {_line(row)} "
            f"({len(infinite)} row(s) in all); the challenge's values are all finite. Fix or "
            f"remove those rows (missing values are written {MISSING_VALUE})."
        )


def _check_codes(path: Path, df: pd.DataFrame, column: str, allowed: dict[str, Any]) -> None:
    values = df[column].astype(str).str.strip()
    bad = np.flatnonzero(~values.isin(list(allowed)).to_numpy())
    if len(bad):
        row = int(bad[0])
        value = df[column].iloc[row]
        what = f"empty {column}" if pd.isna(value) else f"unknown {column} {value!r}"
        raise HiggsDataError(
            f"{path}: {what} in {_line(row)} "
            f"({len(bad)} row(s) in all); {column} must be one of "
            f"{', '.join(repr(k) for k in allowed)}. Fix those rows or use the file as published."
        )


def _check_weights(path: Path, df: pd.DataFrame, column: str) -> None:
    values = df[column].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
    if len(bad):
        row = int(bad[0])
        raise HiggsDataError(
            f"{path}: {column} must be a positive finite number, but {_line(row)} holds "
            f"{float(values[row])!r}. Event weights of the challenge files are all positive; fix "
            "or remove that row."
        )


def read_higgs_csv(path: str | os.PathLike[str], *, nrows: int | None = None) -> pd.DataFrame:
    """Read and check a Higgs challenge CSV file, either layout, plain or gzipped.

    Every check names the file, the column and, where it helps, the row: the header must be
    one of :data:`LAYOUTS` (in any column order), every row must have all fields, the numeric
    columns must be numeric, ``Label`` must be ``s`` or ``b``, ``KaggleSet`` one of ``t``,
    ``b``, ``v``, ``u``, and the weights positive.

    Args:
        path: a ``.csv`` or ``.csv.gz`` file (the compression is inferred from the name).
        nrows: read only the first ``nrows`` events.

    Returns:
        The table, columns in the layout's order; ``df.attrs["layout"]`` names the layout
        (``"opendata-v2"`` or ``"kaggle-training"``).

    Raises:
        DataNotFoundError: no file at ``path``.
        HiggsDataError: the file is empty or malformed.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(_not_found_message(path))
    if nrows is not None and nrows < 1:
        raise ValueError(f"nrows must be a positive integer or None, got {nrows}")
    if path.stat().st_size == 0:
        raise HiggsDataError(
            f"{path}: the file is empty (0 bytes). It was probably cut short while being "
            "written or downloaded; delete it and fetch it again."
        )

    try:
        # Only an empty field is missing: a cell that holds text such as "nan" or "NA" is
        # kept as that text, so that the checks below can say what it holds.
        df = pd.read_csv(
            path, nrows=nrows, low_memory=False, keep_default_na=False, na_values=[""]
        )
    except pd.errors.EmptyDataError as exc:
        raise HiggsDataError(
            f"{path}: no header line and no data. Delete the file and fetch it again."
        ) from exc
    except pd.errors.ParserError as exc:
        detail = str(exc).split("C error: ")[-1].strip()
        raise HiggsDataError(
            f"{path}: a row has the wrong number of columns ({detail}; lines count from 1, "
            "header included). Every row must have as many fields as the header; fix or "
            "remove that line."
        ) from exc
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise HiggsDataError(
            f"{path}: cannot be read as a CSV file ({type(exc).__name__}: {exc}). A .gz file "
            "that was cut short reads this way; delete it and fetch it again."
        ) from exc

    if not df.index.equals(pd.RangeIndex(len(df))):
        # pandas takes the first k columns as the index when the first data row has k
        # fields more than the header; the rows would be read shifted by k columns.
        header = len(df.columns)
        extra = df.index.nlevels
        raise HiggsDataError(
            f"{path}: a row has the wrong number of columns (line 2, the first data row, has "
            f"{header + extra} fields, {extra} more than the {header} of the header). Every "
            "row must have as many fields as the header; fix or remove that line, or the "
            "header line if it is the one cut short."
        )
    columns = [str(c) for c in df.columns]
    layout = _detect_layout(path, columns)
    if len(df) == 0:
        raise HiggsDataError(
            f"{path}: the header is there but the file holds no events. Use a file with data."
        )
    df = df[LAYOUTS[layout]]

    for column in ["EventId", *FEATURES, "Weight"] + (
        ["KaggleWeight"] if layout == "opendata-v2" else []
    ):
        _check_numeric(path, df, column)
    _check_codes(path, df, "Label", _LABELS)
    _check_weights(path, df, "Weight")
    if layout == "opendata-v2":
        _check_codes(path, df, "KaggleSet", _KAGGLE_SETS)
        _check_weights(path, df, "KaggleWeight")
    df.attrs["layout"] = layout
    return df


def _table_from_frame(df: pd.DataFrame) -> _Table:
    layout = df.attrs["layout"]
    opendata = layout == "opendata-v2"
    return _Table(
        layout=layout,
        event_id=df["EventId"].to_numpy(dtype=np.int64),
        X=df[FEATURES].to_numpy(dtype=np.float32),
        label=(df["Label"].astype(str).str.strip() == "s").to_numpy(dtype=np.int8),
        weight=df["Weight"].to_numpy(dtype=np.float64),
        kaggle_weight=df["KaggleWeight"].to_numpy(dtype=np.float64) if opendata else None,
        kaggle_set=(
            df["KaggleSet"].astype(str).str.strip().to_numpy(dtype="<U1") if opendata else None
        ),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _adler32(path: Path) -> str:
    value = 1
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            value = zlib.adler32(chunk, value)
    return f"{value:08x}"


# --- Cache ------------------------------------------------------------------------------


def _cache_path(path: Path) -> Path:
    """``<file>.cache.npz`` beside the data file; where its folder is read-only (a shared
    data set), ``<file>.<size>.cache.npz`` in the user's cache folder instead
    (``$XDG_CACHE_HOME/torchopt_bench``, by default ``~/.cache/torchopt_bench``)."""
    beside = path.with_name(path.name + ".cache.npz")
    if path.parent.stat().st_mode & stat.S_IWUSR:
        return beside
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torchopt_bench"
    root.mkdir(parents=True, exist_ok=True)
    return root / f"{path.name}.{path.stat().st_size}.cache.npz"


def _load_cache(cache_file: Path, sha256: Callable[[], str], size: int) -> _Table | None:
    """The cached table if the cache was made from this exact file, else None.

    ``sha256`` gives the file's hash; it is asked for only after the arrays are read, so that
    hashing (in another thread) and reading overlap.
    """
    try:
        with np.load(cache_file, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if (meta.get("version"), meta.get("size")) == (_CACHE_VERSION, size):
                has_kaggle = "kaggle_set" in npz.files
                table = _Table(
                    layout=meta["layout"],
                    event_id=npz["event_id"],
                    X=npz["X"],
                    label=npz["label"],
                    weight=npz["weight"],
                    kaggle_weight=npz["kaggle_weight"] if has_kaggle else None,
                    kaggle_set=npz["kaggle_set"] if has_kaggle else None,
                )
                if meta.get("sha256") == sha256():
                    return table
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        logger.warning("cache miss: cannot read %s (%s); re-reading the CSV", cache_file, exc)
        return None
    logger.info(
        "cache miss: %s was made from another file (sha256 %s, %s bytes) or by another "
        "version of this loader; re-reading the CSV",
        cache_file,
        meta.get("sha256"),
        meta.get("size"),
    )
    return None


def _new_file_mode() -> int:
    """The permission bits ``open()`` gives a new file: 0666 less the process's umask."""
    umask = os.umask(0)  # reading the umask means setting it; restored at once
    os.umask(umask)
    return 0o666 & ~umask


def _write_cache(cache_file: Path, table: _Table, sha256: str, size: int) -> None:
    """Write the cache atomically; a directory that cannot be written only costs speed."""
    meta = {"version": _CACHE_VERSION, "sha256": sha256, "size": size, "layout": table.layout}
    arrays = {
        "meta": np.array(json.dumps(meta)),
        "event_id": table.event_id,
        "X": table.X,
        "label": table.label,
        "weight": table.weight,
    }
    if table.kaggle_set is not None and table.kaggle_weight is not None:
        arrays |= {"kaggle_weight": table.kaggle_weight, "kaggle_set": table.kaggle_set}
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{cache_file.name}.", suffix=".tmp", dir=cache_file.parent
        )
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            # mkstemp creates the file for its owner alone (0600); the cache gets the mode
            # of any new file (0644 under the usual umask 022), so that the other users of
            # a shared data folder read it too.
            os.fchmod(f.fileno(), _new_file_mode())
        os.replace(tmp_name, cache_file)
        tmp_name = None
        logger.info("cache written: %s", cache_file)
    except OSError as exc:
        logger.warning(
            "cannot write the cache %s (%s); later runs re-read the CSV", cache_file, exc
        )
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)


def _read_table(path: Path, nrows: int | None, cache: bool) -> tuple[_Table, str, str, int]:
    """The file's table (its first ``nrows`` rows), from the cache when it is valid.

    The file is hashed in a second thread while the cache (or the CSV) is read. Returns the
    table, the cache status (``"hit"``, ``"miss"`` or ``"off"``), the file's sha256 and its
    size. The cache always holds the whole file: a run that reads only the first rows uses a
    cache that is there but does not write one.
    """
    size = path.stat().st_size
    with ThreadPoolExecutor(max_workers=1) as pool:
        digest = pool.submit(_sha256, path).result
        cache_file = _cache_path(path)
        if not cache:
            return _table_from_frame(read_higgs_csv(path, nrows=nrows)), "off", digest(), size

        if cache_file.is_file():
            table = _load_cache(cache_file, digest, size)
            if table is not None:
                logger.info("cache hit: %s (%d rows)", cache_file, len(table))
                return table.head(nrows), "hit", digest(), size
        else:
            logger.info("cache miss: no %s yet", cache_file)

        table = _table_from_frame(read_higgs_csv(path, nrows=nrows))
        if nrows is None:
            _write_cache(cache_file, table, digest(), size)
        return table, "miss", digest(), size


# --- Download ---------------------------------------------------------------------------


def download_higgs(
    path: str | os.PathLike[str],
    url: str | None = DEFAULT_URL,
    sha256: str | None = DEFAULT_SHA256,
) -> Path:
    """Download the challenge file to ``path``, verified before it is put in place.

    The file is fetched with pooch's HTTP downloader (with a progress bar) into a temporary
    directory beside ``path``, its checksum is computed, and only a file that matches is
    moved to ``path`` (an atomic rename on the same file system); an interrupted transfer or
    a mismatch leaves nothing at ``path``.

    Args:
        path: where the file goes (e.g. ``data/atlas-higgs-challenge-2014-v2.csv.gz``).
        url: where to fetch it from; ``None`` or by default the CERN Open Data portal's
            record 328 (:data:`DEFAULT_URL`).
        sha256: the expected sha256 (hex). ``None`` is allowed only for :data:`DEFAULT_URL`,
            whose file is then checked against the size and adler32 the portal publishes.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.

    Raises:
        DownloadError: the transfer failed or the checksum did not match.
    """
    import pooch  # imported here: only downloads need it

    target = Path(path).expanduser()
    url = DEFAULT_URL if url is None else url
    if sha256 is None and url != DEFAULT_URL:
        raise ValueError(
            f"sha256 is required to download from {url!r} (only {DEFAULT_URL} has a published "
            "checksum built in), got sha256=None"
        )
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    target.parent.mkdir(parents=True, exist_ok=True)

    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        logger.info("downloading %s to %s", url, target)
        fetched = staging / target.name
        try:
            # pooch's HTTP downloader: streamed, with a tqdm progress bar; 404 and the like
            # raise, and so does a connection closed before Content-Length bytes arrived.
            pooch.HTTPDownloader(progressbar=True, chunk_size=1 << 20, timeout=60)(
                url, str(fetched), None
            )
        except Exception as exc:
            raise DownloadError(
                f"downloading {url} failed ({type(exc).__name__}: {exc}); nothing was written "
                f"to {target}. Check the network and the URL and run again, or download the "
                "file by hand and point the loader at it."
            ) from exc

        if sha256 is not None:
            actual = _sha256(fetched)
            if actual.lower() != sha256.lower():
                raise DownloadError(
                    f"checksum mismatch for {url}: expected sha256 {sha256.lower()}, got "
                    f"{actual}. The download was discarded and nothing was written to {target}. "
                    "Run again (the transfer may have been corrupted); if the file on the "
                    "server has changed on purpose, check it and pass its sha256."
                )
            logger.info("sha256 %s verified", actual)
        else:
            size, adler = fetched.stat().st_size, _adler32(fetched)
            if size != PORTAL_SIZE or adler != PORTAL_ADLER32:
                raise DownloadError(
                    f"checksum mismatch for {url}: the portal publishes {PORTAL_SIZE} bytes "
                    f"with adler32 {PORTAL_ADLER32}, got {size} bytes with adler32 {adler}. "
                    f"The download was discarded and nothing was written to {target}. Run "
                    "again; if the portal's file has changed, pass its sha256 explicitly."
                )
            logger.info("size %d and adler32 %s verified against record 328", size, adler)
        os.replace(fetched, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("downloaded %s (%d bytes)", target, target.stat().st_size)
    return target


# --- Splitting, weights, standardisation ------------------------------------------------


def renormalize_weights(
    w: np.ndarray,
    y: np.ndarray,
    signal_total: float = SIGNAL_WEIGHT_TOTAL,
    background_total: float = BACKGROUND_WEIGHT_TOTAL,
) -> np.ndarray:
    """Scale weights, per label, to the given totals.

    Signal weights (``y == 1``) are multiplied by ``signal_total / sum(signal weights)`` and
    background weights by ``background_total / sum(background weights)``; a label absent
    from ``y`` leaves nothing to scale. This is how KaggleWeight is made from Weight within
    each KaggleSet, and it makes the AMS of a subsample comparable to the full dataset's.

    Args:
        w: event weights, float ``(n,)``, positive.
        y: labels ``(n,)``, 1 signal and 0 background.
        signal_total: target sum of the signal weights (default: the full-dataset total).
        background_total: target sum of the background weights (default: likewise).

    Returns:
        A new float64 array.
    """
    w = np.asarray(w, dtype=np.float64)
    y = np.asarray(y)
    if w.shape != y.shape:
        raise ValueError(f"w and y must have the same shape, got {w.shape} and {y.shape}")
    out = w.copy()
    for label, total in ((1, signal_total), (0, background_total)):
        mask = y == label
        current = w[mask].sum()
        if mask.any():
            if not current > 0:
                raise ValueError(f"the weights of label {label} sum to {current}, cannot scale")
            out[mask] *= total / current
    return out


def _stratified_partition(
    rows: np.ndarray, labels: np.ndarray, fractions: list[float], rng: np.random.Generator
) -> list[np.ndarray]:
    """Split ``rows`` at random into ``len(fractions) + 1`` parts, stratified by label.

    Part ``k`` gets ``round(fractions[k] * n_label)`` rows of each label; the last part gets
    the rest. Each part keeps file order.
    """
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for label in (0, 1):
        members = rows[labels[rows] == label]
        members = members[rng.permutation(len(members))]
        start = 0
        for k, fraction in enumerate(fractions):
            count = int(round(fraction * len(members)))
            parts[k].append(members[start : start + count])
            start += count
        parts[-1].append(members[start:])
    return [np.sort(np.concatenate(p)) for p in parts]


class _Rows(NamedTuple):
    """Row indices of each split, and how they were chosen (``"kaggleset"`` or ``"random"``)."""

    train: np.ndarray
    val: np.ndarray
    test_public: np.ndarray | None
    test_private: np.ndarray | None
    mode: str


def _split_rows(table: _Table, val_fraction: float, test_fraction: float, seed: int) -> _Rows:
    """Row indices of each split (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n = len(table)
    kaggle_set = table.kaggle_set
    if kaggle_set is None:
        training = np.arange(n)
    else:
        training = np.flatnonzero(kaggle_set == "t")
        counts = {code: int(np.count_nonzero(kaggle_set == code)) for code in _KAGGLE_SETS}
        logger.info(
            "KaggleSet counts: %s",
            ", ".join(f"{code} ({_KAGGLE_SETS[code]}) {counts[code]}" for code in _KAGGLE_SETS),
        )
        if counts["u"]:
            logger.info("dropping the %d unused (KaggleSet u) events", counts["u"])
    if len(training) == 0:
        raise HiggsDataError(
            "no training events: the rows read have no KaggleSet t. Read more rows "
            "(max_events) or use the full file."
        )

    if kaggle_set is not None and np.isin(kaggle_set, ["b", "v"]).any():
        val, train = _stratified_partition(training, table.label, [val_fraction], rng)
        public = np.flatnonzero(kaggle_set == "b")
        private = np.flatnonzero(kaggle_set == "v")
        return _Rows(
            train,
            val,
            public if len(public) else None,
            private if len(private) else None,
            "kaggleset",
        )

    logger.info(
        "no KaggleSet b/v rows in the data read: falling back to a seeded (seed=%d), "
        "label-stratified random split of the %d training events into train / val "
        "(val_fraction=%g) / test_public (test_fraction=%g); there is no test_private",
        seed,
        len(training),
        val_fraction,
        test_fraction,
    )
    val, test, train = _stratified_partition(
        training, table.label, [val_fraction, test_fraction], rng
    )
    return _Rows(train, val, test, None, "random")


def _standardization(X_train: np.ndarray, missing: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std (ddof=0) of the training features, float64.

    With ``missing="impute"`` the -999 entries are left out of the statistics. A column that
    is constant (or entirely missing) in the training split gets std 1, so it maps to 0.
    """
    values = X_train.astype(np.float64)
    if missing == "impute":
        present = values != MISSING_VALUE
        count = present.sum(axis=0)
        values[~present] = 0.0
        mean = values.sum(axis=0) / np.maximum(count, 1)
        values -= mean
        values[~present] = 0.0
        std = np.sqrt(np.einsum("ij,ij->j", values, values) / np.maximum(count, 1))
        for name in np.asarray(FEATURES)[count == 0]:
            logger.warning("%s is missing in every training event; it is set to 0", name)
    else:
        mean = values.mean(axis=0)
        values -= mean
        std = np.sqrt(np.einsum("ij,ij->j", values, values) / len(values))
    std = np.where(std > 0, std, 1.0)
    return mean, std


def _transform(
    X: np.ndarray, mean: np.ndarray, std: np.ndarray, missing: str, indicator_cols: np.ndarray
) -> np.ndarray:
    """Standardised features (float32), with missing-value indicators when imputing."""
    n, d = X.shape
    extra = len(indicator_cols) if missing == "impute" else 0
    out = np.empty((n, d + extra), dtype=np.float32)
    np.subtract(X, mean.astype(np.float32), out=out[:, :d])
    np.divide(out[:, :d], std.astype(np.float32), out=out[:, :d])
    if missing == "impute":
        is_missing = X == MISSING_VALUE
        # The training mean of the column, which is 0 once standardised.
        out[:, :d][is_missing] = 0.0
        out[:, d:] = is_missing[:, indicator_cols]
    return out


def _describe(split: HiggsSplit | None) -> str:
    if split is None:
        return "none"
    return f"{len(split)} ({split.n_signal} s, {split.n_background} b)"


# --- Loading ----------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool
    )


def check_options(
    *,
    max_events: Any = None,
    val_fraction: Any = 0.2,
    test_fraction: Any = 0.2,
    missing: Any = "impute",
    weight: Any = "KaggleWeight",
    prefix: str = "",
) -> int | None:
    """Check :func:`load_higgs`'s options; return ``max_events`` as an int (or None).

    A value of the wrong type (``max_events="abc"``, as a command line passes text it cannot
    read as a number) is refused like a value out of range, with a ``ValueError`` naming the
    option, the value and what it takes. ``prefix`` is put before the option's name in the
    message (``"task.data."`` names the command line's key and adds how to set it). A float
    with no fractional part (``1e3``) is taken as its integer.
    """

    def refuse(key: str, value: Any, expected: str, example: str) -> ValueError:
        hint = f"; set it as {prefix}{key}={example}" if prefix else ""
        return ValueError(f"{prefix}{key} must be {expected}, got {value!r}{hint}")

    if max_events is not None:
        whole = _is_number(max_events) and float(max_events).is_integer()
        if not whole or max_events < 1:
            every = "null" if prefix else "None"
            expected = f"a positive integer or {every} (every event)"
            raise refuse("max_events", max_events, expected, "N")
        max_events = int(max_events)
    if not _is_number(val_fraction) or not 0.0 <= val_fraction < 1.0:
        raise refuse("val_fraction", val_fraction, "in [0, 1)", "0.2")
    if not _is_number(test_fraction) or not 0.0 <= test_fraction < 1.0:
        raise refuse("test_fraction", test_fraction, "in [0, 1)", "0.2")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"{prefix}test_fraction must be in [0, 1) with val_fraction + test_fraction < 1, "
            f"got test_fraction={test_fraction} and val_fraction={val_fraction}"
        )
    if missing not in ("impute", "sentinel"):
        raise refuse("missing", missing, "'impute' or 'sentinel'", "impute")
    if weight not in ("KaggleWeight", "Weight"):
        raise refuse("weight", weight, "'KaggleWeight' or 'Weight'", "KaggleWeight")
    return max_events


def load_higgs(
    path: str | os.PathLike[str],
    *,
    max_events: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    missing: str = "impute",
    weight: str = "KaggleWeight",
    download: bool = False,
    url: str | None = DEFAULT_URL,
    sha256: str | None = DEFAULT_SHA256,
    cache: bool = True,
    test_fraction: float = 0.2,
) -> HiggsData:
    """Load a Higgs challenge file as standardised, weighted train/val/test splits.

    See the module docstring for the conventions (missing values, weights, splits,
    standardisation, cache). In short: KaggleSet ``t`` is split into train and val
    (seeded, stratified by label), ``b`` is ``test_public`` and ``v`` ``test_private``;
    without ``b``/``v`` rows, ``t`` is split at random into train, val and ``test_public``.
    Every split's weights are scaled, per label, to the full-dataset totals
    :data:`SIGNAL_WEIGHT_TOTAL` and :data:`BACKGROUND_WEIGHT_TOTAL`. Features are
    standardised with the training split's statistics.

    Args:
        path: the ``.csv`` or ``.csv.gz`` file, either layout.
        max_events: use only the first ``max_events`` rows of the file (None: all).
        val_fraction: fraction of the training events (per label) held out for validation.
        seed: seed of the random splits.
        missing: ``"impute"`` (training mean plus a 0/1 indicator per column with missing
            values) or ``"sentinel"`` (keep -999, standardised like any value).
        weight: the weight column, ``"KaggleWeight"`` or ``"Weight"``; a file without
            KaggleWeight (Kaggle's training.csv) falls back to ``Weight``.
        download: fetch the file from ``url`` first when ``path`` does not exist.
        url: where to download from (``None``: :data:`DEFAULT_URL`).
        sha256: the download's expected sha256 (see :func:`download_higgs`).
        cache: read and write the parsed arrays in ``<path>.cache.npz``.
        test_fraction: fraction of the training events (per label) held out as
            ``test_public`` when the file has no KaggleSet ``b``/``v`` rows; unused otherwise.

    Returns:
        A :class:`HiggsData`.

    Raises:
        DataNotFoundError: no file at ``path`` and ``download`` is false.
        HiggsDataError: the file is malformed.
        DownloadError: the download failed or did not match its checksum.
    """
    max_events = check_options(
        max_events=max_events,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        missing=missing,
        weight=weight,
    )

    path = Path(path).expanduser()
    if path.is_dir():
        raise DataNotFoundError(_directory_message(path))
    if not path.is_file():
        if not download:
            raise DataNotFoundError(_not_found_message(path))
        download_higgs(path, url=url, sha256=sha256)

    # What was read.
    table, cache_status, digest, size = _read_table(path, max_events, cache)
    n_signal = int(table.label.sum())
    logger.info(
        "read %s: %d bytes, sha256 %s, %d rows (%d signal, %d background), layout %s",
        path.resolve(),
        size,
        digest,
        len(table),
        n_signal,
        len(table) - n_signal,
        table.layout,
    )

    # Which weight.
    raw_weight = table.weight
    if weight == "KaggleWeight":
        if table.kaggle_weight is None:
            logger.info(
                "%s has no KaggleWeight column (%s layout): using Weight", path, table.layout
            )
            weight = "Weight"
        else:
            raw_weight = table.kaggle_weight

    rows = _split_rows(table, val_fraction, test_fraction, seed)
    if len(rows.train) == 0:
        raise HiggsDataError(
            f"{path}: the training split is empty ({len(table)} rows read); read more rows."
        )
    for name, split_rows in (("training", rows.train), ("validation", rows.val)):
        signal_in_split = int(table.label[split_rows].sum())
        if signal_in_split in (0, len(split_rows)):
            raise HiggsDataError(
                f"{path}: the {name} split holds {len(split_rows)} events, "
                f"{signal_in_split} of them signal: column Label needs both classes (s and b) in "
                "every split, or the weighted AUC and the AMS are undefined. Use a file "
                "with both classes, or more of its rows (task.data.max_events)."
            )

    # Standardisation from the training split only; indicators for every column with
    # missing values among the rows read.
    mean, std = _standardization(table.X[rows.train], missing)
    feature_names = list(FEATURES)
    indicator_cols = np.flatnonzero((table.X == MISSING_VALUE).any(axis=0))
    if missing == "impute":
        feature_names += [f"{FEATURES[j]}_missing" for j in indicator_cols]

    def make(split_rows: np.ndarray) -> HiggsSplit:
        y = table.label[split_rows]
        return HiggsSplit(
            X=_transform(table.X[split_rows], mean, std, missing, indicator_cols),
            y=y.astype(np.float32),
            w=renormalize_weights(raw_weight[split_rows], y),
            event_id=table.event_id[split_rows].astype(np.int64),
            w_file=raw_weight[split_rows].astype(np.float64),
        )

    train, val = make(rows.train), make(rows.val)
    test_public = None if rows.test_public is None else make(rows.test_public)
    test_private = None if rows.test_private is None else make(rows.test_private)
    logger.info(
        "splits (%s, seed %d): train %s, val %s, test_public %s, test_private %s; "
        "%d features, missing=%s, weights from %s scaled to %.6g s / %.6g b per split",
        rows.mode,
        seed,
        _describe(train),
        _describe(val),
        _describe(test_public),
        _describe(test_private),
        len(feature_names),
        missing,
        weight,
        SIGNAL_WEIGHT_TOTAL,
        BACKGROUND_WEIGHT_TOTAL,
    )
    source = {
        "path": str(path.resolve()),
        "size": size,
        "sha256": digest,
        "rows": len(table),
        "n_signal": n_signal,
        "n_background": len(table) - n_signal,
        "layout": table.layout,
        "weight": weight,
        "split": rows.mode,
        "missing": missing,
        "cache": cache_status,
    }
    return HiggsData(
        train=train,
        val=val,
        test_public=test_public,
        test_private=test_private,
        feature_names=feature_names,
        source=source,
        mean=mean,
        std=std,
    )
