#!/usr/bin/env python
"""The piecewise-approximation table (issue 41) from the rows `recipes/pa_table.sh` made.

For each row folder ``WORK/<row>/`` (``eval-validation``, ``eval-testing``: `kws eval`
summaries; ``bench``: `kws bench` of the full export) prints: accuracy per exit on the test
split, the last exit on validation, the LCE model's size, the median LCE latency of every exit
and the float-32 and int8 twins' at the last exit, all from one `kws bench` per bundle. Rows
not finished yet are listed as such. Also says which PA row closes at least half of the gap
between the 1-bit and the real-valued last exit (validation, where settings are chosen) and
whether its last-exit latency is within the int8 twin's.

    .venv/bin/python benchmarks/pa_table.py runs/pa-table [--json /tmp/pa.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROWS = ("bit1", "bit1-adam", "pa2x2", "pa3x3", "pa4x4", "real")
LABEL = {"bit1": "1-bit (Bop)", "bit1-adam": "1-bit (Adam)", "pa2x2": "PA (2, 2)",
         "pa3x3": "PA (3, 3)", "pa4x4": "PA (4, 4)", "real": "real-valued"}


def _read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def row(folder: Path) -> dict | None:
    """One row's figures, or None while any of its three files is missing."""
    test = _read(folder / "eval-testing" / "summary.json")
    val = _read(folder / "eval-validation" / "summary.json")
    bench = _read(folder / "bench" / "bench.json")
    if not (test and val and bench):
        return None
    last = bench["exits"][-1]
    return {"test_per_exit": [test["per_exit_accuracy"][k]
                              for k in sorted(test["per_exit_accuracy"])],
            "test_last": test["last_exit_accuracy"], "val_last": val["last_exit_accuracy"],
            "lce_mib": bench["sizes_mib"]["lce_model"],
            "lce_ms": [e["lce_ms"]["median"] for e in bench["exits"]],
            "float_ms": (last.get("float_ms") or {}).get("median"),
            "int8_ms": (last.get("int8_ms") or {}).get("median")}


def table(work: Path) -> tuple[str, dict]:
    rows = {r: row(work / r) for r in ROWS if (work / r).is_dir()}
    ms = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = ["| model | test accuracy per exit, % | validation, last exit % | LCE model MiB | "
             "LCE ms per exit (median) | float-32 twin ms, exit 5 | int8 twin ms, exit 5 |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        if r is None:
            lines.append(f"| {LABEL[name]} | not finished | | | | | |")
            continue
        lines.append(f"| {LABEL[name]} | {' / '.join(f'{100 * a:.1f}' for a in r['test_per_exit'])}"
                     f" | {100 * r['val_last']:.1f} | {r['lce_mib']:.2f} | "
                     f"{' / '.join(ms(v) for v in r['lce_ms'])} | {ms(r['float_ms'])} | "
                     f"{ms(r['int8_ms'])} |")
    verdict = {}
    bit, real = rows.get("bit1"), rows.get("real")
    if bit and real:
        gap = real["val_last"] - bit["val_last"]
        for name in ("pa2x2", "pa3x3", "pa4x4"):
            r = rows.get(name)
            if r:
                closed = (r["val_last"] - bit["val_last"]) / gap if gap > 0 else float("nan")
                within = r["int8_ms"] is not None and r["lce_ms"][-1] <= r["int8_ms"]
                verdict[name] = {"gap_closed": closed, "latency_within_int8": within}
                lines.append("")
                lines.append(f"{LABEL[name]}: closes {100 * closed:.0f} % of the 1-bit -> "
                             f"real-valued gap at the last exit (validation; target >= 50 %); "
                             f"last exit {ms(r['lce_ms'][-1])} ms against the int8 twin's "
                             f"{ms(r['int8_ms'])} ms ({'within' if within else 'slower'}).")
    return "\n".join(lines), {"rows": rows, "verdict": verdict}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("work", type=Path, help="the folder recipes/pa_table.sh wrote")
    p.add_argument("--json", type=Path, default=None, help="also write every figure here")
    a = p.parse_args(argv)
    if not a.work.is_dir():
        print(f"{a.work}: not a folder (run recipes/pa_table.sh first)", file=sys.stderr)
        return 2
    text, figures = table(a.work)
    print(text)
    if a.json:
        a.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
