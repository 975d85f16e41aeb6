"""Reports built from recorded runs: real calibration runs and hand-made records of the other experiments' shapes
(tests/fixtures/README.md says which is which), checked as data (the planned views), as HTML, as drawn figures,
and in real headless Chromium."""
from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from support import harness_cli

from harness import decide
from harness.record import Result, read
from harness.report import ReportError, build_report, draw, records, views
from harness.stats import summarize
from harness.storage import load_run

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CAL_A, CAL_B, MIXED = FIXTURES / "calibration-a", FIXTURES / "calibration-b", FIXTURES / "synthetic-mixed"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """The parts of the page the tests look at: images, table cells, all text."""

    def __init__(self, text: str):
        super().__init__()
        self.images: list[dict] = []
        self.cells: list[str] = []
        self.text: list[str] = []
        self.scripts = 0
        self._in_cell = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        elif tag in ("td", "th"):
            self._in_cell = True
            self.cells.append("")
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_cell:
            self.cells[-1] += data


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def build(tmp_path: Path, *runs: Path) -> tuple[Path, _Page]:
    out = build_report([copy_run(r, tmp_path / f"{i}-{r.name}") for i, r in enumerate(runs)], None, quiet=True)
    return out, _Page(out.read_text(encoding="utf-8"))


def assert_self_contained(out: Path, page: _Page) -> None:
    """Every chart is an embedded PNG equal to the file in plots/; nothing is fetched from anywhere."""
    pngs = sorted((out.parent / "plots").glob("*.png"))
    assert pngs and len(page.images) == len(pngs)
    for img in page.images:
        src = img["src"]
        assert src.startswith("data:image/png;base64,"), src[:60]
        data = base64.b64decode(src.split(",", 1)[1])
        assert data.startswith(PNG_MAGIC)
        assert data == (out.parent / img["data-file"]).read_bytes()
        assert img.get("alt")
    html = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["'](https?:|//)""", html)
    assert page.scripts == 0


def charts_of(*runs: Path) -> dict[str, views.Chart]:
    return {c.title: c for sec in views.plan_views([load_run(r) for r in runs]) for c in sec.charts()}


def test_real_calibration_run(tmp_path):
    out, page = build(tmp_path, CAL_A)
    assert out == tmp_path / "0-calibration-a" / "report.html"
    assert_self_contained(out, page)
    text = " ".join(page.text)
    env = json.loads((CAL_A / "env.json").read_text())
    # the summary names the machine, Spark, versions and commit from env.json
    for fact in (env["machine"]["cpu_model"], env["spark"]["master"], env["git"]["commit"],
                 f"pyspark {env['packages']['pyspark']}", "calibration-a"):
        assert fact in text, fact
    # the numbers behind the chart: each case's median is in the table
    recs = [json.loads(line) for line in (CAL_A / "results.jsonl").read_text().splitlines()]
    for r in recs:
        assert records.fmt(r["stats"]["median"]) in page.cells, r["case"]
    assert "cases ok" in page.cells and str(len(recs)) in page.cells
    # these records predate `ci_level`: the coverage comes from n (7 repeats: min-max, 98.4%), never "95%"
    assert "98.4% CI" in page.cells and not any("95% CI" in c for c in page.cells)
    # the answers come first; a calibration run answers none of the questions and says what would
    assert text.index("Answers") < text.index("Summary")
    assert "not measured in this run: needs UDF styles (harness run udf)" in text


def test_mixed_records_every_view(tmp_path):
    out, page = build(tmp_path, MIXED)
    assert_self_contained(out, page)
    text = " ".join(page.text)
    titles = [img["alt"] for img in page.images]
    # cases linked by their roles are charted together, apart from the rest of the experiment
    assert "ingestion (small_files, compacted, pyarrow_limit): wall time per case, lower is better" in titles
    assert "ingestion (compact): wall time per case, lower is better" in titles
    assert "udf: wall time per case, lower is better" in titles
    # feeders against feed_limit, their limit: a dashed line in the chart, "(limit)" in the table
    feed = charts_of(MIXED)["training: rows/s per case, higher is better"]
    assert [g.limit.label for g in feed.plot.groups] == ["feed_limit"]
    assert "feed_limit" not in [p.label for g in feed.plot.groups for p in g.points]
    limit_col = feed.table.columns.index("feed_limit leads by")
    assert [row[limit_col] for row in feed.table.rows if row[0] == "feed_limit"] == ["(limit)"]
    assert "training: test r2 vs wall time (task=co2)" in titles
    scaling = [t for t in titles if "vs workers" in t]
    assert len(scaling) == 3 and any("strong" in t for t in scaling) and any("gpu" in t for t in scaling)
    # malformed lines are named by number, and the rest was still built
    assert re.search(r"results\.jsonl:5: malformed record skipped", text)
    assert re.search(r"results\.jsonl:9: malformed record skipped \(unknown status 'exploded'\)", text)
    # failures are listed with their reasons, and markup in a message stays text
    assert "Horovod's TensorFlow binding does not work with Keras 3 (TF >= 2.16)" in text
    assert "Spark MLlib has no convolutional layers" in text
    assert "case ran past its 600 s timeout" in text
    assert "<script>alert('not escaped')</script>" in text  # shown as text...
    assert page.scripts == 0  # ...never as markup
    # the four answers, at the top: n=5 intervals are labelled with their real coverage
    assert "Yes, after" in text and "93.8% CI" in page.cells


def test_tables_fold_speedup_and_limit(tmp_path):
    """The speedup over each case's reference and its limit's lead are columns of the main table, computed from
    the records their roles name; tables stay narrow enough not to scroll sideways."""
    results, problems = read(MIXED / "results.jsonl")
    assert len(problems) == 2
    ok = records.usable(results)
    ing = [r for r in ok if r.experiment == "ingestion"]
    med = {(r.case, r.params["n_files"]): r.stats["median"] for r in ing}
    [reads] = [c for c in views.comparison("ingestion", ing) if "compacted" in c.title]
    cols = reads.table.columns
    assert cols[:6] == ["case", "params", "n", "median (s)", "93.8% CI", "speedup vs small_files"]
    assert cols[6] == "pyarrow_limit leads by"
    rows = {(row[0], row[1]): row for row in reads.table.rows}
    for n in (2000, 5000):
        compacted = rows[("compacted", f"n_files={n}")]
        assert compacted[5] == records.times(med[("small_files", n)] / med[("compacted", n)])
        assert compacted[6] == records.times(med[("compacted", n)] / med[("pyarrow_limit", n)])
        assert rows[("small_files", f"n_files={n}")][5] == "1 (reference)"
        assert rows[("pyarrow_limit", f"n_files={n}")][6] == "(limit)"
    # params all rows share are said once, in the caption, not in every row
    assert "file_kb=25" in reads.table.caption and not any("file_kb" in row[1] for row in reads.table.rows)

    udf = [r for r in ok if r.experiment == "udf"]
    [chart] = views.comparison("udf", udf)
    assert len(chart.table.columns) <= 10
    assert [row[0] for row in chart.table.rows].count("native") == 2  # the limit, in the table once per workload
    assert not any(c.startswith(("checksum", "speedup_vs_")) for c in chart.table.columns)
    # a speedup whose interval overlaps its reference's is printed, and said to be not clear
    roles = {"reference": "base"}
    base = Result("t", "e", "base", {}, samples=[1.0, 1.1, 1.2], stats=summarize([1.0, 1.1, 1.2]))
    near = Result("t", "e", "near", {}, samples=[0.95, 1.05, 1.15], stats=summarize([0.95, 1.05, 1.15]),
                  extra={"roles": roles})
    far = Result("t", "e", "far", {}, samples=[0.4, 0.5, 0.6], stats=summarize([0.4, 0.5, 0.6]),
                 extra={"roles": roles})
    table = views.case_table([base, near, far], [base, near, far], set())
    col = table.columns.index("speedup vs base")
    cells = {row[0]: row[col] for row in table.rows}
    assert cells == {"base": "1 (reference)", "near": "1.05× (not clear)", "far": "2.2×"}

    # scaling: efficiency = throughput(N) / (N x throughput(1)) of the same launcher, device and mode
    sc = [r for r in ok if r.experiment == "scaling"]
    thr = {(r.case, r.params["mode"], r.params["device"], r.params["workers"]): r.stats["median"] for r in sc}
    charts = {c.title: c for c in views.scaling("scaling", sc)}
    weak_cpu = charts["scaling: throughput and efficiency vs workers, weak scaling (fixed batch per worker), cpu"]
    row = next(r for r in weak_cpu.table.rows if r[0].startswith("horovod") and r[1] == "4")
    eff = thr[("horovod", "weak", "cpu", 4)] / (4 * thr[("horovod", "weak", "cpu", 1)])
    assert row[6] == f"{eff:.0%}" and row[7] == "true"  # 4 workers on 2 cores: oversubscribed, shown


def test_labels_say_each_unit_once():
    assert records.metric_label("wall_s", "s") == "wall time (s)"
    assert records.metric_label("rows_per_s", "rows/s") == "rows/s"
    assert records.metric_label("samples_per_s", "samples/s") == "samples/s"
    assert records.metric_label("peak_rss_mb", "MB") == "peak rss mb (MB)"
    for title, chart in charts_of(MIXED).items():
        assert "wall_s (s)" not in title
        if isinstance(chart.plot, views.DotsPlot):
            assert chart.plot.axis_label.count("(s)") <= 1 and "wall_s" not in chart.plot.axis_label


def test_several_runs_side_by_side_agree_with_compare(tmp_path):
    # the first run given has no calibration case: the ratio is taken against the first run that has it
    out, page = build(tmp_path, MIXED, CAL_A, CAL_B)
    assert out.parent.name == "0-synthetic-mixed"
    assert_self_contained(out, page)
    a, b = load_run(CAL_A), load_run(CAL_B)
    verdicts = {cv.identity: cv.verdict for cv in decide.compare(a.results, b.results).cases}
    for ra in a.results:
        rb = next(r for r in b.results if r.identity == ra.identity)
        ratio = rb.stats["median"] / ra.stats["median"]
        change = views.change_text(ratio, rb.better, rb.unit)
        assert f"{ratio:.3f}× ({change}): {verdicts[ra.identity]}" in page.cells, ra.identity
    text = " ".join(page.text)
    assert "Runs side by side: calibration" in text
    assert "Runs side by side: udf" not in text  # in one run only: nothing to put side by side
    assert "calibration-b vs reference: ratio, verdict" in page.cells
    # and `harness compare` says the same for each case
    p = harness_cli("compare", str(CAL_A), str(CAL_B), "--json")
    assert {c["identity"]: c["verdict"] for c in json.loads(p.stdout)["cases"]} == verdicts


def test_ratio_words():
    assert views.change_text(1.832, "lower", "s") == "83% slower"  # not "45% worse"
    assert views.change_text(0.55, "lower", "s") == "45% less time"
    assert views.change_text(1.25, "higher", "rows/s") == "25% higher"
    assert views.change_text(1.001, "lower", "s") == "same"


def test_same_cases_keep_one_axis_scale():
    """Charts of the same cases (parts, each run, runs side by side) share one axis scale, chosen from all of
    them: a log axis for one and a linear one for the other would hide the comparison."""
    def sleep(run_id: str, ms: float) -> Result:
        xs = [ms / 1000 * f for f in (0.99, 1.0, 1.01)]
        return Result(run_id, "calibration", "sleep", {"ms": int(ms)}, samples=xs, stats=summarize(xs))

    class Run:
        def __init__(self, label, results):
            self.label, self.results = label, results

    narrow = Run("narrow", [sleep("narrow", 10), sleep("narrow", 20)])
    wide = Run("wide", [sleep("wide", 10), sleep("wide", 1000)])  # a 100x range: log for every chart of them
    sections = views.plan_views([narrow, wide])
    plots = [c.plot for s in sections for c in s.charts()]
    assert len(plots) == 3 and all(isinstance(p, views.DotsPlot) and p.log for p in plots)
    # the scale is looked up by family, whose key does not depend on the order records come in
    ing = [r for r in read(MIXED / "results.jsonl")[0] if r.experiment == "ingestion"]
    assert [k for k, _ in views.families(ing)] == ["compacted", ""]
    assert sorted(k for k, _ in views.families(ing[::-1])) == ["", "compacted"]


def test_legends_never_cover_the_data(tmp_path):
    """Drawn for real: every legend lies outside every axes of its figure."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    for chart in charts_of(MIXED, CAL_A).values():
        fig = Figure(figsize=(draw.WIDTH_IN, chart.height_in), dpi=draw.DPI, layout="constrained")
        {views.DotsPlot: draw.draw_dots, views.ScalingPlot: draw.draw_scaling,
         views.CurvesPlot: draw.draw_curves}[type(chart.plot)](fig, chart.plot)
        fig.canvas.draw()
        for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
            box = legend.get_window_extent()
            for ax in fig.axes:
                assert not box.overlaps(ax.get_window_extent()), chart.title


def test_missing_env_json_still_builds(tmp_path):
    run = tmp_path / "no-env"
    run.mkdir()
    shutil.copy(CAL_A / "results.jsonl", run / "results.jsonl")
    out = build_report([run], None, quiet=True)
    page = _Page(out.read_text())
    text = " ".join(page.text)
    assert "env.json: missing" in text and "— (no env.json)" in page.cells
    assert_self_contained(out, page)


def test_odd_records_and_many_bars(tmp_path):
    """Records a careless experiment could write never break the page; too many rows split over charts."""
    from harness.record import append

    run = tmp_path / "odd"
    for ms in range(1, 41):  # 40 rows: more than one chart holds
        xs = [ms / 1000, ms / 1000 * 1.01]
        append(run / "results.jsonl", Result("odd", "calibration", "sleep", {"ms": ms}, samples=xs,
                                             stats=summarize(xs), extra={"nested": {"a": 1}, "flag": True}))
    odd = [Result("odd", "x", "empty_ok", {"b": True}),  # ok without samples: nothing to chart
           Result("odd", "x", "nan", {"b": False}, samples=[1.0], stats={"n": 1, "median": float("nan")}),
           Result("odd", "x", "thr", {"workers": 2}, metric="items_per_s", unit="1/s", better="higher",
                  samples=[5.0], stats=summarize([5.0]), extra={"series": [[0, 1], [1, "x"]]}),
           Result("odd", "x", "skipped", {}, status="skipped"),
           Result("odd", "x", "roles", {}, samples=[1.0], stats=summarize([1.0]), extra={"roles": "not a dict"})]
    for r in odd:
        append(run / "results.jsonl", r)
    out = build_report([run], None, quiet=True)
    page = _Page(out.read_text())
    assert_self_contained(out, page)
    titles = [img["alt"] for img in page.images]
    assert "calibration: wall time per case, lower is better (part 1 of 2)" in titles
    assert "calibration: wall time per case, lower is better (part 2 of 2)" in titles
    # a lone 2-worker point without its 1-worker figure: charted, with no speedup claimed
    scaling = next(c for title, c in charts_of(run).items() if "vs workers" in title)
    assert scaling.table.rows[0][5:7] == ["—", "—"]


def test_chart_that_cannot_be_drawn_keeps_its_table(tmp_path, monkeypatch, capsys):
    def broken(fig, plot):
        raise ValueError("no room for the bars")

    monkeypatch.setattr(draw, "draw_dots", broken)
    out, page = build(tmp_path, CAL_A)
    text = " ".join(page.text)
    assert "could not be drawn (ValueError: no room for the bars)" in text and page.images == []
    assert "could not be drawn" in capsys.readouterr().err
    assert records.fmt(_records(CAL_A / "results.jsonl")[0]["stats"]["median"]) in page.cells


def _records(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_builds_show_progress(tmp_path, capsys):
    """Drawing says which chart it is at (the run's progress line; one line per chart in a log) and the total."""
    build_report([copy_run(MIXED, tmp_path / "mixed")], None)
    err = capsys.readouterr().err
    n = len(charts_of(MIXED))
    assert re.search(rf"\[1/{n}\] chart: ingestion", err)
    assert re.search(rf"report: {n} chart\(s\) drawn in \d+ s", err)
    build_report([copy_run(CAL_A, tmp_path / "cal")], None, quiet=True)
    assert capsys.readouterr().err == ""


def test_unusable_input_names_path_and_fix(tmp_path):
    with pytest.raises(ReportError, match=r"no such run folder"):
        build_report([tmp_path / "nope"], None, quiet=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match=r"empty: not a run folder \(no results\.jsonl in it\)"):
        build_report([tmp_path / "empty"], None, quiet=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.jsonl").write_text("{oops\n\n[1, 2]\n")
    with pytest.raises(ReportError, match=r"results\.jsonl: holds no readable records \(2 malformed line\(s\), "
                                          r"first: .*results\.jsonl:1: malformed"):
        build_report([bad], None, quiet=True)


def test_cli_report_and_run(tmp_path):
    # `harness report` prints the page's path; a bad folder exits 2 with the message
    run = copy_run(CAL_B, tmp_path / "cal")
    p = harness_cli("report", str(run), "--out", str(tmp_path / "out" / "page.html"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"report: {tmp_path / 'out' / 'page.html'}"
    assert len(list((tmp_path / "out" / "plots").glob("*.png"))) == 1
    p = harness_cli("report", str(tmp_path / "missing"))
    assert p.returncode == 2 and "missing: no such run folder" in p.stderr
    # a real run ends by printing its report's path (no Spark needed for calibration.sleep)...
    results = tmp_path / "results"
    p = harness_cli("run", "calibration.sleep", "--set", "ms=1,3", "--repeats", "3", "--results", str(results),
                    "--run-id", "r1")
    assert p.returncode == 0, p.stderr
    report = results / "r1" / "report.html"
    assert f"report:   {report}" in p.stdout and report.is_file()
    assert_self_contained(report, _Page(report.read_text()))
    # ...and MLflow's parent run holds the page and its plots
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name("spark-ml-harness")
    parent = client.search_runs([exp.experiment_id], "tags.`harness.level` = 'parent'")[0]
    assert {"report.html", "plots"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    pngs = [a.path for a in client.list_artifacts(parent.info.run_id, "plots")]
    assert pngs == [f"plots/{p.name}" for p in sorted((results / "r1" / "plots").glob("*.png"))]
    # `harness report` with no folder takes the newest run under --results
    (results / "r1" / "report.html").unlink()
    p = harness_cli("report", "--results", str(results))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"report: {report}" and report.is_file()


def test_rebuild_replaces_old_plots(tmp_path):
    run = copy_run(MIXED, tmp_path / "mixed")
    build_report([run], None, quiet=True)
    before = {p.name for p in (run / "plots").glob("*.png")}
    (run / "plots" / "keep-me.png").write_bytes(PNG_MAGIC)
    lines = (run / "results.jsonl").read_text().splitlines()
    (run / "results.jsonl").write_text("\n".join(x for x in lines if '"scaling"' not in x) + "\n")
    build_report([run], None, quiet=True)
    after = {p.name for p in (run / "plots").glob("*.png")}
    assert "keep-me.png" in after and len(after) < len(before) + 1
    assert not any("workers" in name for name in after)


def test_cli_show_and_export(tmp_path):
    """`harness show` fits 80 columns; `harness export` writes one row per record as CSV or Parquet; both take
    the newest run under --results when none is named; bad input is one line and exit 2."""
    import csv

    import pyarrow.parquet as pq

    results = tmp_path / "results"
    mixed = copy_run(MIXED, results / "mixed")
    copy_run(CAL_A, results / "older")
    os.utime(results / "older" / "results.jsonl", (1, 1))  # mixed is the newest
    n = len(load_run(mixed).results)

    p = harness_cli("show", "--results", str(results), env={"COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("run synthetic-mixed:") and max(len(x) for x in lines) <= 80
    assert "case" in lines[3] and "93.8% CI" in lines[3] and "speedup" in lines[3]
    row = next(x for x in lines if x.startswith("compacted n_files=2000"))
    assert "3.49×" in row and row.rstrip().endswith("ok")
    assert any(x.startswith("mllib model=linear") and "r2 0.991" in x for x in lines)

    p = harness_cli("export", str(mixed))
    assert p.returncode == 0, p.stderr
    with open(mixed / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == n and p.stdout.startswith(f"export: {mixed / 'results.csv'} ({n} rows")
    compacted = next(r for r in table if r["case"] == "compacted" and r["param.n_files"] == "2000")
    assert compacted["extra.roles.reference"] == "small_files" and float(compacted["stats.ci_level"]) == 0.9375
    out = tmp_path / "x" / "all.parquet"
    p = harness_cli("export", "--results", str(results), "--format", "parquet", "--out", str(out))
    assert p.returncode == 0, p.stderr
    t = pq.read_table(out)
    assert t.num_rows == n and {"param.workers", "extra.mb_per_s", "stats.median"} <= set(t.column_names)

    (tmp_path / "file").write_text("")
    (tmp_path / "empty-run").mkdir()
    (tmp_path / "empty-run" / "results.jsonl").write_text("")
    bad = [(["show", str(tmp_path / "missing")], "no such run folder"),
           (["show", str(tmp_path / "empty-run")], "holds no readable records"),
           (["show", "--results", str(tmp_path / "nothing")], "no such results folder"),
           (["export", str(mixed), "--format", "xlsx"], "--format xlsx: unknown format"),
           (["export", str(mixed), "--out", str(tmp_path / "file" / "r.csv")], "cannot write there"),
           (["show", "--results", str(tmp_path / "file")], "file: not a folder"),
           (["report", "--results", str(tmp_path / "empty-run")], "empty-run holds no run folder")]
    for args, message in bad:
        p = harness_cli(*args)
        assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, (args, p)
        assert "Traceback" not in p.stderr


def test_progress_fits_the_terminal():
    """The redrawn progress line is cut to the terminal's width, so an 80-column terminal never wraps it."""
    import pty

    from harness.progress import Progress

    main, side = pty.openpty()
    os.environ["COLUMNS"], old = "80", os.environ.get("COLUMNS")
    try:
        with os.fdopen(side, "w") as stream:
            p = Progress(3, stream=stream)
            p.start_case(1, "udf.pandas_udf_iter " + "workload=plus_one " * 10)
            p.message("a message")
        written = os.read(main, 10_000).decode()
    finally:
        os.close(main)
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    lines = [x for x in written.replace("\r\n", "\n").split("\r") if x.strip()]
    assert lines and all(len(x.rstrip("\n")) < 80 for x in lines), lines


def test_roles_are_declared_once_for_registered_cases():
    """Every reference or limit a case declares names a registered case of its experiment; the report reads
    roles from the records, and falls back to the registry for records written before roles were stored."""
    from harness.registry import load_all

    reg = load_all()
    for exp in reg.values():
        for case in exp.cases.values():
            for role, other in case.roles.items():
                assert other in exp.cases, f"{case.target}: {role} {other!r} is not a case of {exp.id}"
    assert reg["ingestion"].cases["compacted"].roles == {"reference": "small_files", "limit": "pyarrow_limit"}
    old = Result("old", "udf", "pandas_udf", {}, samples=[1.0], stats=summarize([1.0]))
    assert records.roles(old) == reg["udf"].cases["pandas_udf"].roles
    stored = Result("new", "udf", "pandas_udf", {}, extra={"roles": {"reference": "arrow_udf"}})
    assert records.roles(stored) == {"reference": "arrow_udf"}


# ---------------------------------------------------------------------------------- real headless Chromium

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _high_fd(fd: int) -> int:
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3/4): no extra packages, no ports."""

    def __init__(self, exe: str, profile: Path):
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()
        # move the child's ends above 9, so the 3<& / 4>& redirections can't overwrite one another
        to_r, from_w = (_high_fd(fd) for fd in (to_r, from_w))
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-extensions", "--disable-sync", "--no-first-run", "--no-default-browser-check",
                 "--mute-audio", "--window-size=1280,1000", f"--user-data-dir={profile}", "--remote-debugging-pipe"]
        # bash (dash takes one-digit fds only) moves our ends to fds 3/4; exec keeps it one process
        self.proc = subprocess.Popen(["bash", "-c", f'exec "$0" "$@" 3<&{to_r} 4>&{from_w}', exe, *flags],
                                     pass_fds=(to_r, from_w), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        os.close(to_r)
        os.close(from_w)
        self._buf, self._id, self.events = b"", 0, []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_r], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe: " + self.proc.stderr.read().decode()[-2000:])
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for m in self.events:
            if m.get("method") == method:
                return m
        while True:
            m = self._read(deadline)
            self.events.append(m)
            if m.get("method") == method:
                return m

    def close(self):
        try:
            self.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - a browser that is already gone is closed
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        os.close(self._to_w)
        os.close(self._from_r)


def open_page(url: str, profile: Path, screenshot: Path | None = None) -> dict:
    """Loads url; returns the errors seen (exceptions, console/log errors, failed loads) and each image's state."""
    exe = _chromium()
    browser = Browser(exe, profile)
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Page.navigate", {"url": url}, session=session)
        browser.wait_event("Page.loadEventFired", timeout=60)
        images = browser.call("Runtime.evaluate", {"returnByValue": True, "expression": """
            Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth,
                h: i.naturalHeight, shown: i.getBoundingClientRect().width}))"""}, session=session)["result"]["value"]
        layout = browser.call("Runtime.evaluate", {"returnByValue": True, "expression": """
            (() => { const box = s => document.querySelector(s).getBoundingClientRect();
              return {answers_top: box('table.answers').top, summary_top: box('#summary').top,
                answers_text: document.querySelector('table.answers').innerText,
                overflowing: Array.from(document.querySelectorAll('.scroll'))
                  .filter(d => d.scrollWidth > d.clientWidth + 1).map(d => d.innerText.slice(0, 80))}; })()"""},
            session=session)["result"]["value"]
        if screenshot:
            shot = browser.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                                session=session, timeout=60)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        errors = []
        for m in browser.events:
            p = m.get("params", {})
            if m.get("method") == "Runtime.exceptionThrown":
                errors.append(p["exceptionDetails"].get("text"))
            elif m.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
                errors.append(p["entry"]["text"])
            elif m.get("method") == "Runtime.consoleAPICalled" and p.get("type") == "error":
                errors.append(str(p.get("args")))
            elif m.get("method") == "Network.loadingFailed":
                errors.append(f"load failed: {p.get('errorText')}")
        return {"errors": errors, "images": images, "layout": layout}
    finally:
        browser.close()


@pytest.mark.skipif(_chromium() is None, reason="Chromium not installed (apt-get install -y chromium)")
def test_page_in_headless_chromium(tmp_path):
    out = build_report([copy_run(MIXED, tmp_path / "mixed"), copy_run(CAL_A, tmp_path / "cal-a"),
                        copy_run(CAL_B, tmp_path / "cal-b")], tmp_path / "page" / "report.html", quiet=True)
    n_img = len(_Page(out.read_text()).images)
    shot = Path(os.environ.get("REPORT_SCREENSHOT", tmp_path / "screenshot.png"))
    seen = open_page(out.resolve().as_uri(), tmp_path / "profile", screenshot=shot)
    assert seen["errors"] == []
    assert len(seen["images"]) == n_img > 10
    for img in seen["images"]:
        assert img["complete"] and img["w"] > 300 and img["h"] > 100 and img["shown"] > 0, img
    assert shot.read_bytes().startswith(PNG_MAGIC)
    # the answers come first, with interval-aware verdicts; no table needs a sideways scroll at 1280 px
    layout = seen["layout"]
    assert layout["answers_top"] < layout["summary_top"]
    assert "Yes, after" in layout["answers_text"] and "no clear difference between" in layout["answers_text"]
    assert layout["overflowing"] == []


def test_predicted_scaling_chart_per_network_with_measured_points_and_misses(tmp_path):
    """Scaling records on emulated networks: a predicted-efficiency line per launcher and network, the measured
    points with their intervals (from the records' own samples), the model's error, misses flagged."""
    from harness.distributed.commmodel import Link, predict

    def rec(network, workers, samples, extra=None):
        return Result("t", "scaling", "horovod_spark", {"workers": workers, "network": network, "model": "mlp"},
                      metric="samples_per_s", unit="samples/s", better="higher", samples=samples,
                      stats=summarize(samples), extra=dict(extra or {}))

    def model(eff_measured, eff_pred, missed):
        pred = predict(0.01, 1e6, Link(1e-3, 1e8 / 8), None, (1, 2, 256))
        return {"prediction": pred, "predicted_efficiency": eff_pred, "model_error": (eff_pred - eff_measured)
                / eff_measured, "model_missed": missed, "link_fit": {"bandwidth_gbit_s": 0.1, "latency_s": 1e-3,
                                                                     "rms_residual": 0.05}}

    rs = [rec("1gbit", 1, [100.0, 100.0, 100.0]), rec("1gbit", 2, [160.0, 160.0, 160.0], model(0.8, 0.85, False)),
          rec("100mbit", 1, [100.0, 100.0, 100.0]), rec("100mbit", 2, [40.0, 40.0, 40.0], model(0.2, 0.4, True))]
    (chart,) = views.predicted_scaling("scaling", rs)
    plot = chart.plot
    assert isinstance(plot, views.PredictionPlot) and len(plot.lines) == 2
    assert plot.lines[0][1] == [1, 2, 256]
    measured = {(name.split("network=")[1].split()[0], n): (eff, missed) for name, n, eff, _, _, missed in plot.points}
    assert measured[("1gbit", 2)] == (pytest.approx(0.8), False)
    assert measured[("100mbit", 2)] == (pytest.approx(0.2), True) and measured[("100mbit", 1)][0] == 1.0
    rows = {row[0].split("network=")[1].split()[0]: row for row in chart.table.rows}
    assert rows["100mbit"][-1] == "MISSED (> 25%)" and rows["100mbit"][5] == "+100%"
    assert rows["1gbit"][-1] == "within 25%" and "0.1 Gbit/s" in rows["1gbit"][1]
    import matplotlib

    matplotlib.use("Agg", force=True)
    assert draw.render(chart, tmp_path, 1).read_bytes().startswith(PNG_MAGIC)


def test_paired_section_reads_an_unreachable_detectable_change_from_ab_json():
    """ab.json stores a non-finite detectable change as the string "inf" (JSON has no infinity): the report says
    "unreachable" instead of failing."""
    ab = {"design": "paired", "pairs": 10, "threshold": 0.05, "alpha": 0.05,
          "cases": [{"case": "udf.native", "params": {"rows": 10}, "baseline_median": 0.5, "current_median": 0.3,
                     "ratio": 0.6, "ratio_ci": [0.55, 0.66], "ci_level": 0.95, "p": 1.0, "q": 1.0, "mdc": "inf",
                     "verdict": "improved"},
                    {"case": "udf.row_udf", "params": {"rows": 10}, "baseline_median": 0.5, "current_median": 0.5,
                     "ratio": 1.0, "ratio_ci": [0.98, 1.02], "ci_level": 0.95, "p": 0.5, "q": 0.5, "mdc": 0.031,
                     "verdict": "unchanged"}]}
    (chart,) = [item for item in views.paired_section(ab).items if isinstance(item, views.Chart)]
    assert [row[7] for row in chart.table.rows] == ["unreachable", "3.1%"]


def test_try_report_warns_in_one_line_and_returns_none(tmp_path):
    """The end of `run` and `ab`: a report that can't be built is a warning naming the retry command, never an
    exception that would cost the command its results."""
    from harness.report import try_report

    lines = []
    assert try_report(tmp_path / "no-such-run", lines.append, quiet=True) is None
    (line,) = lines
    assert line.startswith("harness: warning: report failed (") and f"harness report {tmp_path / 'no-such-run'}" in line
