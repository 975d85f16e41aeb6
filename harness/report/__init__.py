"""Reports: plots and one self-contained HTML page for one or more run folders (`harness report`).

Nothing here is timed. The report reads `results.jsonl` and `env.json` of each run, plans its views from the
records' generic fields (experiment, case, params, metric, stats, extra, status), draws the charts with
matplotlib (Agg) into `plots/` next to the page, and embeds them base64 in one HTML file readable offline.
Malformed lines, records set aside on loading (`storage.load_run`) and a missing `env.json` are shown on the page
and do not stop the rest of the report.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .. import storage
from ..storage import LoadedRun


class ReportError(Exception):
    """Input the report cannot use at all; the message names the path and the fix."""


def load_run(path: Path) -> LoadedRun:
    """Reads a run folder (or its results.jsonl); raises ReportError when nothing usable is there."""
    try:
        return storage.load_run(path)
    except storage.UnusableInput as e:
        raise ReportError(str(e)) from None


class _Progress:
    """A line on stderr at most every 2 s (and a last one), so short builds stay quiet and long ones show life."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.quiet = total, quiet
        self.t0 = self.last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def step(self, i: int, what: str) -> None:
        now = time.monotonic()
        if self.quiet or now - self.last < 2.0:
            return
        self.last = now
        text = f"report: chart {i}/{self.total} ({what[:60]}), {now - self.t0:.0f} s"
        sys.stderr.write(("\r" + text.ljust(100)) if self.tty else text + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if not self.quiet and self.last != self.t0:
            sys.stderr.write(("\r" if self.tty else "") + f"report: {self.total} chart(s) drawn in "
                             f"{time.monotonic() - self.t0:.0f} s\n")
            sys.stderr.flush()


def build_report(run_dirs: list[Path], out: Path | None = None, quiet: bool = False) -> Path:
    """Builds the page (and plots/ beside it) for one or more runs; returns the HTML path.

    `out` defaults to RUN_DIR/report.html (the first run's folder when several are given).
    """
    from . import html, plots

    if not run_dirs:
        raise ReportError("no run folder given: pass one or more RESULTS/<run_id> folders")
    runs = [load_run(Path(p)) for p in run_dirs]
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

    sections = plots.plan(runs)
    charts = [c for s in sections for c in s.charts()]
    plots.clear_old(plot_dir)
    progress = _Progress(len(charts), quiet)
    for i, chart in enumerate(charts, 1):
        progress.step(i, chart.title)
        try:
            plots.render(chart, plot_dir, i)
        except Exception as e:  # noqa: BLE001 - one chart that can't be drawn must not cost the page
            chart.failed = f"{type(e).__name__}: {e}"
            print(f"harness: warning: chart {chart.title!r} could not be drawn ({chart.failed}); "
                  "its table is still on the page", file=sys.stderr)
    progress.done()
    try:
        out.write_text(html.page(runs, sections), encoding="utf-8")
    except OSError as e:
        raise ReportError(f"{out}: cannot write the report there ({e}); pass another --out FILE") from None
    return out


__all__ = ["ReportError", "build_report", "load_run"]
