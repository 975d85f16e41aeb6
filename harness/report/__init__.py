"""Reports: one self-contained HTML page (plots in `plots/` beside it) for one or more run folders.

Nothing here is timed. The pieces, in the order they run:

- `storage.load_run` reads each run's `results.jsonl` and `env.json` (malformed lines and set-aside records are
  listed on the page; the rest is still used);
- `answers.py` answers the four questions the harness exists for, interval-aware;
- `views.py` plans the charts and tables from the records' generic fields (pure, testable as data);
- `draw.py` draws each planned chart with matplotlib (Agg) into a PNG;
- `html.py` writes the page, the PNGs embedded base64, readable offline.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .. import storage
from ..progress import Progress


class ReportError(Exception):
    """Input the report cannot use at all; the message names the path and the fix."""


def _read_ab(path: Path) -> dict:
    import json

    try:
        ab = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: not a readable `harness ab` result ({e}); rerun `harness ab`") from None
    if not isinstance(ab, dict) or ab.get("design") != "paired":
        raise ReportError(f"{path}: not a paired `harness ab` result; rerun `harness ab`")
    return ab


def try_report(run_dir: Path, warn, quiet: bool = False) -> Path | None:
    """build_report for one run at the end of a command: a report problem never costs the command its results or
    its verdict; `warn` gets one line naming the problem and the retry command instead."""
    try:
        return build_report([run_dir], None, quiet=quiet)
    except Exception as e:  # noqa: BLE001
        warn(f"harness: warning: report failed ({type(e).__name__}: {e}); retry with: harness report {run_dir}")
        return None


def build_report(run_dirs: list[Path], out: Path | None = None, quiet: bool = False) -> Path:
    """Builds the page (and plots/ beside it) for one or more runs; returns the HTML path.

    `out` defaults to RUN_DIR/report.html (the first run's folder when several are given).
    """
    from . import draw, html
    from .answers import answer_all
    from .views import plan_views

    if not run_dirs:
        raise ReportError("no run folder given: pass one or more RESULTS/<run_id> folders")
    paired = None
    if len(run_dirs) == 1 and (Path(run_dirs[0]) / "ab.json").is_file():
        # an `harness ab` folder: its two sides, with the paired verdicts instead of an unpaired comparison
        ab_dir = Path(run_dirs[0])
        paired = _read_ab(ab_dir / "ab.json")
        run_dirs = [ab_dir / "A", ab_dir / "B"]
        out = out if out is not None else ab_dir / "report.html"
    try:
        runs = [storage.load_run(Path(p)) for p in run_dirs]
    except storage.UnusableInput as e:
        raise ReportError(str(e)) from None
    if paired is not None:
        for run, side in zip(runs, "AB"):
            run.label = f"{side}: {run.label}"
    seen: dict[str, int] = {}
    for r in runs:  # the same run id twice (a copied folder) still needs two names on the charts
        n = seen[r.label] = seen.get(r.label, 0) + 1
        if n > 1:
            r.label = f"{r.label} ({r.path.name}#{n})"
    out = Path(out) if out is not None else runs[0].path / "report.html"
    if out.is_dir():
        out = out / "report.html"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        plot_dir = out.parent / "plots"
        plot_dir.mkdir(exist_ok=True)
    except OSError as e:
        raise ReportError(f"{out}: cannot write the report there ({e}); pass another --out FILE") from None
    for r in runs:
        for problem in r.problems:
            print(f"harness: warning: {problem}", file=sys.stderr)

    sections = plan_views(runs, paired)
    charts = [c for s in sections for c in s.charts()]
    draw.clear_old(plot_dir)
    progress = Progress(len(charts), quiet=quiet)
    t0 = time.monotonic()
    for i, chart in enumerate(charts, 1):
        progress.start_case(i, f"chart: {chart.title}")
        try:
            draw.render(chart, plot_dir, i)
        except Exception as e:  # noqa: BLE001 - one chart that can't be drawn must not cost the page
            chart.failed = f"{type(e).__name__}: {e}"
            warning = (f"harness: warning: chart {chart.title!r} could not be drawn ({chart.failed}); its table "
                       "is still on the page")
            if quiet:
                print(warning, file=sys.stderr)
            else:
                progress.message(warning)  # clears the redrawn progress line first
    if charts:
        progress.message(f"report: {len(charts)} chart(s) drawn in {time.monotonic() - t0:.0f} s")
    answered = [(run.label, answer_all(run.results)) for run in runs]
    try:
        out.write_text(html.page(runs, sections, answered), encoding="utf-8")
    except OSError as e:
        raise ReportError(f"{out}: cannot write the report there ({e}); pass another --out FILE") from None
    return out


__all__ = ["ReportError", "build_report"]
