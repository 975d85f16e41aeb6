"""Data generators and loaders. `--data` is checked here before anything runs (exit 2 on a bad path)."""
from __future__ import annotations

import csv
from pathlib import Path

def check_data_path(path: Path) -> list[str]:
    """Problems with a --data path, each naming the path and the fix; [] when usable."""
    if not path.exists():
        return [f"--data {path}: no such file or folder"]
    if path.is_dir():
        from .images import DataError, check_folder

        try:
            check_folder(path)
        except DataError as e:
            return [str(e)]
        return []
    if path.suffix.lower() != ".csv":
        return [f"--data {path}: expected a .csv file or an image folder"]
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = csv.reader(f)
            header = next(rows, None)
            first = next(rows, None)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        return [f"--data {path}: cannot be read as CSV ({e})"]
    if not header or first is None:
        return [f"--data {path}: the CSV needs a header row and at least one data row"]
    return []
