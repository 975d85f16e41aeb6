"""Commands that read recorded runs: `show` (a terminal table) and `export` (CSV / Parquet), each a small module
with `run(args) -> exit code`; cli.py parses their arguments. `pick_run` gives them, and `report`, the newest run
under --results when no run folder is named.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..record import RESULTS_FILE
from ..storage import BASELINES, UnusableInput

EXIT_OK, EXIT_USAGE = 0, 2


def newest_run(results_root: Path) -> Path:
    """The run folder under results_root whose results file changed last (stored baselines aside)."""
    root = Path(results_root)
    runs = [f.parent for f in root.glob(f"*/{RESULTS_FILE}") if f.parent.name != BASELINES and f.is_file()]
    if not runs:
        where = (f"{root} holds no run folder" if root.is_dir() else
                 f"{root}: not a folder" if root.exists() else f"{root}: no such results folder")
        raise UnusableInput(f"{where}; pass RUN_DIR, or --results DIR where `harness run` wrote its runs")
    return max(runs, key=lambda p: (p / RESULTS_FILE).stat().st_mtime)


def pick_run(run_dir: Path | None, results_root: Path) -> Path:
    """The run folder named on the command line, else the newest one under results_root."""
    return Path(run_dir) if run_dir is not None else newest_run(results_root)


def error(message: str) -> int:
    print(f"harness: error: {message}", file=sys.stderr)
    return EXIT_USAGE
