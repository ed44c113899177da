"""Datasets of torchopt_bench: the ATLAS Higgs boson machine learning challenge 2014."""

from .higgs import (
    FEATURES,
    DataNotFoundError,
    DownloadError,
    HiggsData,
    HiggsDataError,
    HiggsSplit,
    download_higgs,
    load_higgs,
    read_higgs_csv,
    renormalize_weights,
)

__all__ = [
    "FEATURES",
    "DataNotFoundError",
    "DownloadError",
    "HiggsData",
    "HiggsDataError",
    "HiggsSplit",
    "download_higgs",
    "load_higgs",
    "read_higgs_csv",
    "renormalize_weights",
]
