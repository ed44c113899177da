"""List the registered optimizers: ``python -m torchopt_bench.optim``.

Prints one row per optimizer of :data:`~torchopt_bench.optim.OPTIMIZERS` with its
capabilities (the fields of :class:`~torchopt_bench.optim.Capabilities`), how its
``fused=True`` path runs (torch's fused kernel or an update compiled by inductor)
and the reference it is checked against.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

import pandas as pd

from . import OPTIMIZERS, Capabilities


def optimizer_table() -> pd.DataFrame:
    """One row per registered optimizer, sorted by name: capabilities, fused path and
    reference."""
    rows = [
        {
            "name": name,
            **cls.capabilities.as_dict(),
            "fused_path": cls.fused_path or "-",
            "reference": cls.reference,
        }
        for name, cls in sorted(OPTIMIZERS.items(), key=lambda item: item[0].lower())
    ]
    columns = ["name", *(f.name for f in fields(Capabilities)), "fused_path", "reference"]
    return pd.DataFrame(rows, columns=columns)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m torchopt_bench.optim", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--format", choices=["text", "csv"], default="text", help="output format")
    args = parser.parse_args(argv)

    table = optimizer_table()
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
    else:
        with pd.option_context("display.width", 200, "display.max_columns", None):
            print(table.to_string(index=False))


if __name__ == "__main__":
    main()
