"""The Higgs challenge loader on small files written here, on the real sample, and with a
real download from a local HTTP server."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from torchopt_bench.data.higgs import (
    FEATURES,
    DataNotFoundError,
    DownloadError,
    HiggsDataError,
    check_options,
    download_higgs,
    load_higgs,
    read_higgs_csv,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "higgs" / "atlas-higgs-challenge-2014-v2-sample.csv"
SAMPLE_SHA256 = "8b6935d921e65ca6eaaa4774d1f0ac01386583626683cf5f052462d01c3d303b"  # its README

# The full-dataset totals every split's weights must sum to: the sums of the Weight column of
# Kaggle's training.csv (signal, background).
SIGNAL_TOTAL = 691.9886077135781
BACKGROUND_TOTAL = 410999.84732187376

OPENDATA_COLUMNS = ["EventId", *FEATURES, "Weight", "Label", "KaggleSet", "KaggleWeight"]
KAGGLE_COLUMNS = OPENDATA_COLUMNS[:-2]
JET_LEADING = ["PRI_jet_leading_pt", "PRI_jet_leading_eta", "PRI_jet_leading_phi"]
JET_PAIR = [
    "DER_deltaeta_jet_jet",
    "DER_mass_jet_jet",
    "DER_prodeta_jet_jet",
    "DER_lep_eta_centrality",
    "PRI_jet_subleading_pt",
    "PRI_jet_subleading_eta",
    "PRI_jet_subleading_phi",
]
# KaggleWeight / Weight per (KaggleSet, Label) in the files written here.
KAGGLE_FACTORS = {("t", "s"): 3.0, ("t", "b"): 3.5, ("b", "s"): 8.0, ("b", "b"): 7.5}
KAGGLE_FACTORS |= {("v", "s"): 1.5, ("v", "b"): 1.75, ("u", "s"): 40.0, ("u", "b"): 45.0}


def events(kaggle_sets: str, seed: int = 0) -> pd.DataFrame:
    """One event per letter of ``kaggle_sets``, labels alternating s, b, with -999 where the
    real data has it (jets by PRI_jet_num, DER_mass_MMC now and then)."""
    rng = np.random.default_rng(seed)
    n = len(kaggle_sets)
    df = pd.DataFrame(np.round(rng.normal(50.0, 20.0, (n, 30)), 3), columns=FEATURES)
    df["PRI_jet_num"] = np.arange(n) % 4
    df.loc[df["PRI_jet_num"] == 0, JET_LEADING] = -999.0
    df.loc[df["PRI_jet_num"] <= 1, JET_PAIR] = -999.0
    df.loc[np.arange(n) % 5 == 2, "DER_mass_MMC"] = -999.0
    df.insert(0, "EventId", 100_000 + np.arange(n))
    df["Label"] = np.where(np.arange(n) % 2 == 0, "s", "b")
    df["Weight"] = np.where(df["Label"] == "s", rng.uniform(1e-3, 1e-2, n), rng.uniform(0.5, 5, n))
    df["KaggleSet"] = list(kaggle_sets)
    factors = [KAGGLE_FACTORS[k, label] for k, label in zip(df["KaggleSet"], df["Label"])]
    df["KaggleWeight"] = df["Weight"] * np.array(factors)
    return df[OPENDATA_COLUMNS]


# 16 training, 6 public test, 8 private test, 2 unused events.
ALL_SETS = "t" * 16 + "bbvvvv" + "bbbbvvvv" + "uu"


def write(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def opendata_file(tmp_path: Path) -> Path:
    return write(events(ALL_SETS), tmp_path / "higgs.csv")


def by_event(df: pd.DataFrame) -> pd.DataFrame:
    return df.set_index("EventId")


# --- Reading both layouts ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "layout"),
    [(OPENDATA_COLUMNS, "opendata-v2"), (KAGGLE_COLUMNS, "kaggle-training")],
)
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_reads_both_layouts_plain_and_gzipped(
    tmp_path: Path, columns: list[str], layout: str, suffix: str
) -> None:
    df = events("t" * 12)[columns]
    df.to_csv(tmp_path / f"f{suffix}", index=False)
    read = read_higgs_csv(tmp_path / f"f{suffix}")
    assert read.attrs["layout"] == layout
    assert list(read.columns) == columns
    pd.testing.assert_frame_equal(read.reset_index(drop=True), df, check_dtype=False)


def test_columns_in_another_order_are_put_back(tmp_path: Path) -> None:
    df = events("t" * 6)
    shuffled = df[list(reversed(OPENDATA_COLUMNS))]
    read = read_higgs_csv(write(shuffled, tmp_path / "f.csv"))
    assert list(read.columns) == OPENDATA_COLUMNS


# --- Malformed input ----------------------------------------------------------------------


def _drop_column(text: str) -> str:
    lines = text.splitlines()
    drop = lines[0].split(",").index("PRI_met")
    return "\n".join(
        ",".join(f for i, f in enumerate(line.split(",")) if i != drop) for line in lines
    )


def _set_field(line_no: int, column: str, value: str):
    def edit(text: str) -> str:
        lines = text.splitlines()
        fields = lines[line_no - 1].split(",")
        fields[lines[0].split(",").index(column)] = value
        lines[line_no - 1] = ",".join(fields)
        return "\n".join(lines) + "\n"

    return edit


def _edit_line(line_no: int, change):
    def edit(text: str) -> str:
        lines = text.splitlines()
        lines[line_no - 1] = change(lines[line_no - 1])
        return "\n".join(lines) + "\n"

    return edit


# (case, how the good file is spoiled, what the message must say). Lines count from 1 with
# the header, so data row k is line k + 1.
MALFORMED = [
    ("missing column", _drop_column, r"missing column\(s\) PRI_met"),
    ("extra column", _edit_line(1, lambda h: h + ",Comment"), r"unexpected column\(s\) 'Comment'"),
    ("empty file", lambda text: "", r"the file is empty \(0 bytes\)"),
    ("header only", lambda text: text.splitlines()[0] + "\n", "holds no events"),
    (
        "non-numeric cell",
        _set_field(4, "PRI_tau_pt", "abc"),
        r"column PRI_tau_pt must be numeric, but row 3 \(line 4 of the file\) holds 'abc'",
    ),
    (
        "empty cell",
        _set_field(5, "DER_mass_vis", ""),
        r"column DER_mass_vis is empty in row 4 \(line 5",
    ),
    (
        "nan cell",
        _set_field(5, "DER_mass_vis", "nan"),
        r"column DER_mass_vis must be numeric, but row 4 \(line 5 of the file\) holds 'nan'",
    ),
    (
        "inf cell",
        _set_field(5, "PRI_met", "inf"),
        r"column PRI_met holds inf in row 4 \(line 5 of the file\) \(1 row\(s\) in all\)",
    ),
    (
        "NA weight",
        _set_field(3, "Weight", "NA"),
        r"column Weight must be numeric, but row 2 \(line 3 of the file\) holds 'NA'",
    ),
    ("unknown label", _set_field(3, "Label", "x"), r"unknown Label 'x' in row 2 \(line 3"),
    ("NA label", _set_field(3, "Label", "NA"), r"unknown Label 'NA' in row 2 \(line 3"),
    ("empty label", _set_field(4, "Label", ""), r": empty Label in row 3 \(line 4"),
    ("unknown KaggleSet", _set_field(6, "KaggleSet", "z"), r"unknown KaggleSet 'z' in row 5"),
    (
        "negative weight",
        _set_field(7, "Weight", "-1.5"),
        r"Weight must be a positive finite number, but row 6 \(line 7",
    ),
    (
        "extra field in a row",
        _edit_line(6, lambda line: line + ",1.0"),
        "wrong number of columns .*Expected 35 fields in line 6, saw 36",
    ),
    (
        "extra field in the first row",
        _edit_line(2, lambda line: line + ",1.0"),
        r"wrong number of columns \(line 2, the first data row, has 36 fields, 1 more than "
        r"the 35 of the header\)",
    ),
    (
        "short header",
        _edit_line(1, lambda header: ",".join(header.split(",")[:3])),
        r"wrong number of columns \(line 2, the first data row, has 35 fields, 32 more than "
        r"the 3 of the header\).*the header line if it is the one cut short",
    ),
    (
        "header one column short",
        _edit_line(1, lambda header: header.rsplit(",", 1)[0]),
        r"has 35 fields, 1 more than the 34 of the header",
    ),
    (
        "missing fields in a row",
        _edit_line(4, lambda line: line.rsplit(",", 2)[0]),
        r"column KaggleWeight is empty in row 3 \(line 4.*too few fields",
    ),
    ("not a gzip file", None, "cannot be read as a CSV file"),
]


@pytest.mark.parametrize(("case", "spoil", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_files_raise_a_clear_error(
    tmp_path: Path, case: str, spoil, message: str
) -> None:
    good = events("t" * 8).to_csv(index=False)
    if spoil is None:
        path = tmp_path / "bad.csv.gz"
        path.write_bytes(gzip.compress(good.encode())[:200])  # cut short
    else:
        path = tmp_path / "bad.csv"
        path.write_text(spoil(good))
    with pytest.raises(HiggsDataError, match=message) as info:
        load_higgs(path, cache=False)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_file_with_one_class_is_refused(tmp_path: Path) -> None:
    df = events("t" * 40)
    path = write(df[df["Label"] == "s"], tmp_path / "signal_only.csv")
    with pytest.raises(
        HiggsDataError,
        match=r"signal_only.csv: the training split holds \d+ "
        r"events, (\d+) of them signal: column Label needs both classes",
    ):
        load_higgs(path, cache=False)


def test_missing_file_says_where_it_looked_and_how_to_get_the_data(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "atlas-higgs-challenge-2014-v2.csv.gz"
    with pytest.raises(DataNotFoundError) as info:
        load_higgs(path)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(path) in message
    assert "task.data.download=true" in message
    assert (
        "https://opendata.cern.ch/record/328/files/atlas-higgs-challenge-2014-v2.csv.gz" in message
    )
    # The sample, where it lies beside the checkout, is offered by its absolute path.
    if SAMPLE.is_file():
        assert f"task.data.path={SAMPLE.resolve()} " in message
    else:
        assert (
            "<checkout>/../shared/data/higgs/atlas-higgs-challenge-2014-v2-sample.csv" in message
        )
    assert "\n" not in message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": 1.0}, "val_fraction must be in"),
        ({"missing": "drop"}, "missing must be 'impute' or 'sentinel', got 'drop'"),
        ({"weight": "w"}, "weight must be 'KaggleWeight' or 'Weight', got 'w'"),
        ({"max_events": 0}, "max_events must be a positive integer"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction \\+ test_fraction < 1"),
    ],
)
def test_bad_options_are_rejected(opendata_file: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_higgs(opendata_file, **kwargs)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("max_events", "abc", "a positive integer or None (every event)"),
        ("max_events", 2.5, "a positive integer or None (every event)"),
        ("max_events", True, "a positive integer or None (every event)"),
        ("val_fraction", "abc", "in [0, 1)"),
        ("test_fraction", None, "in [0, 1)"),
    ],
)
def test_options_of_the_wrong_type_are_named_with_their_key(
    opendata_file: Path, key: str, value: object, expected: str
) -> None:
    import re

    # As the command line passes them: text it could not read as a number.
    message = f"{key} must be {expected}, got {value!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        load_higgs(opendata_file, **{key: value})
    # The command line's spelling of None is null.
    cli_message = "task.data." + message.replace("or None", "or null")
    with pytest.raises(ValueError, match=f"^{re.escape(f'{cli_message}; set it as ')}"):
        check_options(prefix="task.data.", **{key: value})


def test_a_whole_float_max_events_is_taken_as_its_integer(opendata_file: Path) -> None:
    assert check_options(max_events=12.0) == 12
    assert load_higgs(opendata_file, max_events=12.0, cache=False).source["rows"] == 12


def test_a_directory_as_path_says_a_file_is_expected(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_higgs(folder)
    message = str(info.value)
    assert f"task.data.path={folder} is a directory; a data file is expected" in message
    assert "holds no .csv or .csv.gz file" in message
    assert "No Higgs challenge data file" not in message and "\n" not in message
    # With a data file inside, the message offers it.
    write(events(ALL_SETS), folder / "higgs.csv")
    with pytest.raises(DataNotFoundError, match=f"e.g. task.data.path={folder / 'higgs.csv'}$"):
        load_higgs(folder, download=True)  # a directory is never downloaded over


# --- Splits, labels and weights -------------------------------------------------------------


def test_splits_follow_kaggleset(opendata_file: Path) -> None:
    raw = by_event(pd.read_csv(opendata_file))
    data = load_higgs(opendata_file, cache=False, val_fraction=0.25)
    ids = {name: set(getattr(data, name).event_id) for name in ("train", "val")}
    ids["test_public"] = set(data.test_public.event_id)
    ids["test_private"] = set(data.test_private.event_id)

    assert ids["train"] | ids["val"] == set(raw.index[raw["KaggleSet"] == "t"])
    assert not ids["train"] & ids["val"]
    assert ids["test_public"] == set(raw.index[raw["KaggleSet"] == "b"])
    assert ids["test_private"] == set(raw.index[raw["KaggleSet"] == "v"])
    assert len(ids["val"]) == 4  # 25 % of 8 signal and of 8 background training events
    assert data.test is data.test_private
    assert data.source["split"] == "kaggleset"
    for name in ("train", "val", "test_public", "test_private"):
        split = getattr(data, name)
        expected_y = (raw.loc[split.event_id, "Label"] == "s").to_numpy(dtype=np.float32)
        np.testing.assert_array_equal(split.y, expected_y)
        assert (split.X.dtype, split.y.dtype, split.w.dtype, split.event_id.dtype) == (
            np.float32,
            np.float32,
            np.float64,
            np.int64,
        )


@pytest.mark.parametrize("weight", ["KaggleWeight", "Weight"])
def test_weights_are_scaled_to_the_full_dataset_totals_per_split(
    opendata_file: Path, weight: str
) -> None:
    raw = by_event(pd.read_csv(opendata_file))
    data = load_higgs(opendata_file, cache=False, weight=weight)
    for split in (data.train, data.val, data.test_public, data.test_private):
        assert split.w[split.y == 1].sum() == pytest.approx(SIGNAL_TOTAL, rel=1e-12)
        assert split.w[split.y == 0].sum() == pytest.approx(BACKGROUND_TOTAL, rel=1e-12)
        # Within a split and label the weights stay proportional to the file's.
        for label in (0, 1):
            ratio = split.w[split.y == label] / raw.loc[split.event_id, weight][split.y == label]
            np.testing.assert_allclose(ratio, ratio.iloc[0], rtol=1e-12)


def test_kaggleweight_and_weight_agree_after_scaling(opendata_file: Path) -> None:
    # KaggleWeight / Weight is constant per set and label, so per-split scaling erases it.
    a = load_higgs(opendata_file, cache=False, weight="KaggleWeight")
    b = load_higgs(opendata_file, cache=False, weight="Weight")
    for name in ("train", "val", "test_public", "test_private"):
        np.testing.assert_allclose(getattr(a, name).w, getattr(b, name).w, rtol=1e-12)


def test_kaggle_training_layout_falls_back_to_weight_and_a_random_split(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(events("t" * 40)[KAGGLE_COLUMNS], tmp_path / "training.csv")
    with caplog.at_level(logging.INFO, logger="torchopt_bench.data.higgs"):
        data = load_higgs(path, cache=False)
    assert data.source["layout"] == "kaggle-training"
    assert data.source["weight"] == "Weight"
    assert "has no KaggleWeight column" in caplog.text
    assert "falling back to a seeded" in caplog.text
    assert data.test_private is None
    assert (len(data.train), len(data.val), len(data.test_public)) == (24, 8, 8)
    assert data.test_public.w[data.test_public.y == 1].sum() == pytest.approx(SIGNAL_TOTAL)


def test_random_split_is_seeded_and_stratified(tmp_path: Path) -> None:
    path = write(events("t" * 50), tmp_path / "t_only.csv")

    def ids(seed: int) -> list[list[int]]:
        data = load_higgs(path, cache=False, seed=seed, val_fraction=0.2, test_fraction=0.2)
        return [s.event_id.tolist() for s in (data.train, data.val, data.test_public)]

    assert ids(3) == ids(3)
    assert ids(3) != ids(4)
    data = load_higgs(path, cache=False, seed=3)
    for split, n in ((data.val, 5), (data.test_public, 5), (data.train, 15)):
        assert (split.n_signal, split.n_background) == (n, n)  # 25 s and 25 b in the file
    every = sorted(sum(ids(3), []))
    assert every == list(range(100_000, 100_050))


def test_max_events_takes_the_first_rows(opendata_file: Path) -> None:
    data = load_higgs(opendata_file, cache=False, max_events=12)
    every = np.concatenate([data.train.event_id, data.val.event_id, data.test_public.event_id])
    assert sorted(every) == list(range(100_000, 100_012))
    assert data.source["rows"] == 12
    assert data.source["split"] == "random"  # the first 12 rows are all KaggleSet t


# --- Missing values and standardisation -----------------------------------------------------


def reference_standardise(
    raw: pd.DataFrame, train_ids: np.ndarray, ids: np.ndarray, column: str, skip_missing: bool
) -> np.ndarray:
    """Standardise one column of rows ``ids`` with the training rows' mean and std (ddof=0)."""
    train_values = raw.loc[train_ids, column].to_numpy(dtype=np.float64)
    if skip_missing:
        train_values = train_values[train_values != -999.0]
    mean, std = train_values.mean(), train_values.std()
    values = raw.loc[ids, column].to_numpy(dtype=np.float64)
    out = (values - mean) / std
    if skip_missing:
        out[values == -999.0] = 0.0
    return out


@pytest.mark.parametrize("missing", ["impute", "sentinel"])
def test_standardisation_uses_the_training_split_only(opendata_file: Path, missing: str) -> None:
    raw = by_event(pd.read_csv(opendata_file))
    data = load_higgs(opendata_file, cache=False, missing=missing)
    train_ids = data.train.event_id
    for split in (data.train, data.val, data.test_public, data.test_private):
        for column in ("PRI_tau_pt", "DER_mass_MMC", "PRI_jet_leading_pt", "DER_mass_jet_jet"):
            j = FEATURES.index(column)
            expected = reference_standardise(
                raw, train_ids, split.event_id, column, skip_missing=missing == "impute"
            )
            np.testing.assert_allclose(split.X[:, j], expected, rtol=1e-5, atol=1e-5)


def test_test_rows_do_not_move_the_statistics(tmp_path: Path) -> None:
    df = events(ALL_SETS)
    path = write(df, tmp_path / "a.csv")
    outlying = df.copy()
    tests = outlying["KaggleSet"].isin(["b", "v"])
    outlying.loc[tests, "PRI_tau_pt"] = 1e6
    other = write(outlying, tmp_path / "b.csv")
    a, b = load_higgs(path, cache=False), load_higgs(other, cache=False)
    np.testing.assert_array_equal(a.train.X, b.train.X)
    np.testing.assert_array_equal(a.val.X, b.val.X)
    np.testing.assert_array_equal(a.mean, b.mean)


def test_impute_adds_one_indicator_per_column_with_missing_values(opendata_file: Path) -> None:
    raw = by_event(pd.read_csv(opendata_file))
    data = load_higgs(opendata_file, cache=False)
    with_missing = [c for c in FEATURES if (raw[c] == -999.0).any()]
    assert sorted(with_missing) == sorted(["DER_mass_MMC", *JET_LEADING, *JET_PAIR])
    assert data.feature_names == FEATURES + [f"{c}_missing" for c in with_missing]
    for split in (data.train, data.val, data.test_public, data.test_private):
        assert split.X.shape[1] == 41
        for k, column in enumerate(with_missing):
            expected = (raw.loc[split.event_id, column] == -999.0).to_numpy(dtype=np.float32)
            np.testing.assert_array_equal(split.X[:, 30 + k], expected)
        # No sentinel reaches the network: every value is a modest finite number.
        assert np.isfinite(split.X).all()
        assert np.abs(split.X).max() < 50


def test_sentinel_keeps_minus_999_as_a_value(opendata_file: Path) -> None:
    data = load_higgs(opendata_file, cache=False, missing="sentinel")
    assert data.feature_names == FEATURES
    j = FEATURES.index("PRI_jet_leading_pt")
    raw = by_event(pd.read_csv(opendata_file))
    missing_rows = (raw.loc[data.train.event_id, "PRI_jet_leading_pt"] == -999.0).to_numpy()
    # The sentinel ends up as one value far below the others.
    assert len(set(data.train.X[missing_rows, j])) == 1
    assert data.train.X[missing_rows, j].max() < data.train.X[~missing_rows, j].min() - 1


# --- Cache ----------------------------------------------------------------------------------


def test_cache_is_written_then_hit_and_matches_a_fresh_parse(opendata_file: Path) -> None:
    cache_file = opendata_file.with_name(opendata_file.name + ".cache.npz")
    first = load_higgs(opendata_file)
    assert first.source["cache"] == "miss"
    assert cache_file.is_file()
    second = load_higgs(opendata_file)
    assert second.source["cache"] == "hit"
    fresh = load_higgs(opendata_file, cache=False)
    for name in ("train", "val", "test_public", "test_private"):
        for attr in ("X", "y", "w", "event_id"):
            np.testing.assert_array_equal(
                getattr(getattr(second, name), attr), getattr(getattr(fresh, name), attr)
            )
    limited = load_higgs(opendata_file, max_events=10)
    assert limited.source["cache"] == "hit"
    assert limited.source["rows"] == 10


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_cache_gets_the_mode_of_a_new_file(opendata_file: Path, umask: int) -> None:
    import os
    import stat

    cache_file = opendata_file.with_name(opendata_file.name + ".cache.npz")
    previous = os.umask(umask)
    try:
        load_higgs(opendata_file)
        reference = opendata_file.with_name("reference")
        reference.write_bytes(b"")  # what open() gives a new file under this umask
    finally:
        os.umask(previous)
    mode = stat.S_IMODE(cache_file.stat().st_mode)
    assert mode == stat.S_IMODE(reference.stat().st_mode) == 0o666 & ~umask
    assert load_higgs(opendata_file).source["cache"] == "hit"
    assert [p.name for p in opendata_file.parent.iterdir() if p.suffix == ".tmp"] == []


def test_cache_is_invalidated_when_the_file_changes(opendata_file: Path) -> None:
    before = load_higgs(opendata_file)
    j = FEATURES.index("PRI_tau_eta")
    old_value = float(before.train.X[0, j])

    # Same size, one digit of one value changed: only the hash can tell.
    text = opendata_file.read_text()
    lines = text.splitlines()
    row = before.train.event_id[0] - 100_000 + 1
    fields = lines[row].split(",")
    fields[j + 1] = fields[j + 1][:-1] + ("1" if fields[j + 1][-1] != "1" else "2")
    lines[row] = ",".join(fields)
    opendata_file.write_text("\n".join(lines) + "\n")
    assert opendata_file.stat().st_size == len(text)

    after = load_higgs(opendata_file)
    assert after.source["cache"] == "miss"
    assert after.source["sha256"] == hashlib.sha256(opendata_file.read_bytes()).hexdigest()
    assert after.source["sha256"] != before.source["sha256"]
    assert float(after.train.X[0, j]) != old_value
    assert load_higgs(opendata_file).source["cache"] == "hit"


def test_unreadable_cache_is_ignored(
    opendata_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    opendata_file.with_name(opendata_file.name + ".cache.npz").write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING, logger="torchopt_bench.data.higgs"):
        data = load_higgs(opendata_file)
    assert data.source["cache"] == "miss"
    assert "cannot read" in caplog.text
    assert load_higgs(opendata_file).source["cache"] == "hit"


# --- Download from a real local server --------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/truncated/"):
            body = (Path(self.directory) / self.path.split("/")[-1]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])  # then the connection closes
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # keep the test output clean
        pass


@pytest.fixture
def served_sample(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A gzipped copy of the real sample served over HTTP on 127.0.0.1; (base URL, sha256)."""
    if not SAMPLE.is_file():
        pytest.skip(f"the real sample is not at {SAMPLE}")
    root = tmp_path / "server"
    root.mkdir()
    packed = gzip.compress(SAMPLE.read_bytes())
    (root / "sample.csv.gz").write_bytes(packed)

    def handler(*args, **kwargs):
        return _Handler(*args, directory=str(root), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hashlib.sha256(packed).hexdigest()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_verifies_then_loads(tmp_path: Path, served_sample: tuple[str, str]) -> None:
    base, sha256 = served_sample
    target = tmp_path / "data" / "higgs.csv.gz"
    data = load_higgs(
        target, download=True, url=f"{base}/sample.csv.gz", sha256=sha256, cache=False
    )
    assert hashlib.sha256(target.read_bytes()).hexdigest() == sha256
    assert data.source["rows"] == 9998
    assert data.source["sha256"] == sha256
    assert sorted(p.name for p in target.parent.iterdir()) == ["higgs.csv.gz"]


def test_checksum_mismatch_leaves_no_file(tmp_path: Path, served_sample: tuple[str, str]) -> None:
    base, sha256 = served_sample
    wrong = "0" * 64
    target = tmp_path / "data" / "higgs.csv.gz"
    with pytest.raises(DownloadError) as info:
        download_higgs(target, url=f"{base}/sample.csv.gz", sha256=wrong)
    message = str(info.value)
    assert wrong in message and sha256 in message
    assert "nothing was written" in message
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_interrupted_download_leaves_no_file(
    tmp_path: Path, served_sample: tuple[str, str]
) -> None:
    base, sha256 = served_sample
    target = tmp_path / "data" / "higgs.csv.gz"
    with pytest.raises(DownloadError, match="failed"):
        download_higgs(target, url=f"{base}/truncated/sample.csv.gz", sha256=sha256)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_missing_remote_file_is_a_download_error(
    tmp_path: Path, served_sample: tuple[str, str]
) -> None:
    base, sha256 = served_sample
    with pytest.raises(DownloadError, match="404"):
        download_higgs(tmp_path / "x.csv.gz", url=f"{base}/absent.csv.gz", sha256=sha256)


def test_download_from_another_url_needs_a_checksum(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256 is required"):
        download_higgs(tmp_path / "x.csv.gz", url="http://127.0.0.1:9/x.csv.gz", sha256=None)
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        download_higgs(tmp_path / "x.csv.gz", url="http://127.0.0.1:9/x.csv.gz", sha256="abc")


# --- The real sample --------------------------------------------------------------------------


@pytest.fixture
def real_sample() -> Path:
    if not SAMPLE.is_file():
        pytest.skip(f"the real sample is not at {SAMPLE} (../shared/data/higgs/)")
    return SAMPLE


def test_real_sample_loads(real_sample: Path) -> None:
    # cache=False: nothing is written beside the shared data.
    data = load_higgs(real_sample, cache=False)
    assert data.source["sha256"] == SAMPLE_SHA256
    assert (data.source["rows"], data.source["n_signal"], data.source["n_background"]) == (
        9998,
        4999,
        4999,
    )
    assert data.source["layout"] == "opendata-v2"
    assert data.source["split"] == "random"
    assert data.test_private is None
    assert len(data.train) + len(data.val) + len(data.test_public) == 9998
    assert data.n_features == 41
    for split in (data.train, data.val, data.test_public):
        assert split.w[split.y == 1].sum() == pytest.approx(SIGNAL_TOTAL, rel=1e-12)
        assert split.w[split.y == 0].sum() == pytest.approx(BACKGROUND_TOTAL, rel=1e-12)
        assert np.isfinite(split.X).all()


def test_real_sample_matches_what_the_docs_say(real_sample: Path) -> None:
    df = read_higgs_csv(real_sample)
    assert set(df["KaggleSet"]) == {"t"}
    ratio = df["KaggleWeight"] / df["Weight"]
    for label, value in (("s", 3.257674), ("b", 3.279658)):
        assert ratio[df["Label"] == label].to_numpy() == pytest.approx(value, rel=1e-6)
    jets = df["PRI_jet_num"]
    for column in JET_LEADING:
        np.testing.assert_array_equal(df[column] == -999.0, jets == 0)
    for column in JET_PAIR:
        np.testing.assert_array_equal(df[column] == -999.0, jets <= 1)
    mmc_missing = df["DER_mass_MMC"] == -999.0
    assert 0.05 < mmc_missing.mean() < 0.2
    assert all(mmc_missing[jets == j].any() for j in range(4))  # not tied to the jets
    other = [c for c in FEATURES if c not in {"DER_mass_MMC", *JET_LEADING, *JET_PAIR}]
    assert not (df[other] == -999.0).to_numpy().any()


def test_gzipped_copy_of_the_sample_reads_the_same(tmp_path: Path, real_sample: Path) -> None:
    packed = tmp_path / "sample.csv.gz"
    with real_sample.open("rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    a, b = load_higgs(real_sample, cache=False), load_higgs(packed)
    np.testing.assert_array_equal(a.train.X, b.train.X)
    np.testing.assert_array_equal(a.test_public.w, b.test_public.w)
