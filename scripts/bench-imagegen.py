#!/usr/bin/env python
"""Images/s of the Caltech-shaped JPEG generator (harness.data.images.generate_tree), one worker vs all.

Usage: .venv/bin/python scripts/bench-imagegen.py [--files 2000] [--kb 25] [--workers 1,2]
Writes into a temporary folder that is removed afterwards; prints one JSON line per worker count.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.data.images import generate_tree  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--kb", type=int, default=25)
    p.add_argument("--workers", default=f"1,{os.cpu_count() or 1}", help="comma-separated worker counts")
    args = p.parse_args()
    for w in sorted({int(x) for x in args.workers.split(",")}):
        tmp = Path(tempfile.mkdtemp(prefix="imagegen-"))
        try:
            figures = generate_tree(tmp / "tree", args.files, args.kb, workers=w)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(json.dumps({"workers_asked": w, "cpu_count": os.cpu_count(), **figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
