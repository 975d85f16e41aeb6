"""Reports built from recorded runs: real calibration runs and hand-made records of the other experiments' shapes
(tests/fixtures/README.md says which is which), checked as data, as HTML, and in real headless Chromium."""
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

from conftest import harness_cli

from harness.report import ReportError, build_report, load_run
from harness.report import plots

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
    records = [json.loads(line) for line in (CAL_A / "results.jsonl").read_text().splitlines()]
    for r in records:
        assert plots.fmt(r["stats"]["median"]) in page.cells, r["case"]
    assert "cases ok" in page.cells and str(len(records)) in page.cells


def test_mixed_records_every_view(tmp_path):
    out, page = build(tmp_path, MIXED)
    assert_self_contained(out, page)
    text = " ".join(page.text)
    titles = [img["alt"] for img in page.images]
    # one comparison chart per experiment and metric, scaling per mode and device, a quality curve
    assert any(t.startswith("ingestion: median wall_s") for t in titles)
    assert any(t.startswith("udf: median wall_s") for t in titles)
    # feeders are charted apart from trainings, against feed_limit
    feed = next(c for sec in plots.plan([load_run(MIXED)]) for c in sec.charts()
                if c.title.startswith("training (feed_*"))
    assert "feed_limit (reference line)" in [row[0] for row in feed.table.rows]
    assert any(t.startswith("training (feed_* cases): median rows_per_s") for t in titles)
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


def _records(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_speedup_and_limit_figures(tmp_path):
    from harness.record import read

    results, problems = read(MIXED / "results.jsonl")
    assert len(problems) == 2
    ok = plots.usable(results)
    ing = [r for r in ok if r.experiment == "ingestion"]
    [table] = plots.speedups("ingestion", ing)
    med = {(r.case, r.params["n_files"]): r.stats["median"] for r in ing}
    rows = {(row[0], row[1]): row for row in table.rows}
    for n in (2000, 5000):
        compacted = next(v for k, v in rows.items() if k[0] == "compacted" and f"n_files={n}" in k[1])
        # speedup over small_files with the same n_files, and share of the pyarrow limit
        assert compacted[4] == f"{med[('small_files', n)] / med[('compacted', n)]:.2f}×"
        assert compacted[5] == f"{med[('pyarrow_limit', n)] / med[('compacted', n)]:.3g}×"
    for n in (2000, 5000):  # one finding per reference record: the best read per file count
        gain = med[("small_files", n)] / med[("compacted", n)]
        assert (f"ingestion (n_files={n}): best case is compacted, {gain:.2f}× small_files, better than it"
                in " ".join(table.headlines))

    # udf: the limit (native) is a line, not a bar; the best style excludes it
    [udf_table] = plots.speedups("udf", [r for r in ok if r.experiment == "udf"])
    assert len(udf_table.headlines) == 2 and not any("is native" in h for h in udf_table.headlines)
    [udf_chart] = plots.comparison("udf", [r for r in ok if r.experiment == "udf"])
    assert [row[0] for row in udf_chart.table.rows].count("native (reference line)") == 2

    # scaling: efficiency = throughput(N) / (N x throughput(1)) of the same launcher, device and mode
    sc = [r for r in ok if r.experiment == "scaling"]
    thr = {(r.case, r.params["mode"], r.params["device"], r.params["workers"]): r.stats["median"] for r in sc}
    charts = {c.title: c for c in plots.scaling("scaling", sc)}
    weak_cpu = charts["scaling: throughput and efficiency vs workers, weak scaling (fixed batch per worker), cpu"]
    row = next(r for r in weak_cpu.table.rows if r[0].startswith("horovod") and r[1] == "4")
    eff = thr[("horovod", "weak", "cpu", 4)] / (4 * thr[("horovod", "weak", "cpu", 1)])
    assert row[6] == f"{eff:.0%}" and row[7] == "true"  # 4 workers on 2 cores: oversubscribed, shown


def test_several_runs_side_by_side(tmp_path):
    # the first run given has no calibration case: the ratio is taken against the first run that has it
    out, page = build(tmp_path, MIXED, CAL_A, CAL_B)
    assert out.parent.name == "0-synthetic-mixed"
    assert_self_contained(out, page)
    a = {(r["case"], json.dumps(r["params"])): r["stats"]["median"] for r in _records(CAL_A / "results.jsonl")}
    b = {(r["case"], json.dumps(r["params"])): r["stats"]["median"] for r in _records(CAL_B / "results.jsonl")}
    assert a.keys() == b.keys()
    for key in a:
        ratio = f"{b[key] / a[key]:.3f}"
        assert any(c.startswith(ratio + " (") for c in page.cells), (key, ratio)
    text = " ".join(page.text)
    assert "Runs side by side: calibration" in text
    assert "Runs side by side: udf" not in text  # in one run only: nothing to put side by side
    assert "calibration-b / reference" in page.cells


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
    """Records a careless experiment could write never break the page; too many bars split over charts."""
    from harness.record import Result, append
    from harness.stats import summarize

    run = tmp_path / "odd"
    for ms in range(1, 41):  # 40 bars: more than one chart holds
        xs = [ms / 1000, ms / 1000 * 1.01]
        append(run / "results.jsonl", Result("odd", "calibration", "sleep", {"ms": ms}, samples=xs,
                                             stats=summarize(xs), extra={"nested": {"a": 1}, "flag": True}))
    odd = [Result("odd", "x", "empty_ok", {"b": True}),  # ok without samples: nothing to chart
           Result("odd", "x", "nan", {"b": False}, samples=[1.0], stats={"n": 1, "median": float("nan")}),
           Result("odd", "x", "thr", {"workers": 2}, metric="items_per_s", unit="1/s", better="higher",
                  samples=[5.0], stats=summarize([5.0]), extra={"series": [[0, 1], [1, "x"]]}),
           Result("odd", "x", "skipped", {}, status="skipped")]
    for r in odd:
        append(run / "results.jsonl", r)
    out = build_report([run], None, quiet=True)
    page = _Page(out.read_text())
    assert_self_contained(out, page)
    titles = [img["alt"] for img in page.images]
    assert "calibration: median wall_s per case, lower is better (part 1 of 2)" in titles
    assert "calibration: median wall_s per case, lower is better (part 2 of 2)" in titles
    # a lone 2-worker point without its 1-worker figure: charted, with no speedup claimed
    scaling = next(c for sec in plots.plan([load_run(run)]) for c in sec.charts() if "vs workers" in c.title)
    assert scaling.table.rows[0][5:7] == ["—", "—"]


def test_chart_that_cannot_be_drawn_keeps_its_table(tmp_path, monkeypatch, capsys):
    def broken(*args):
        def draw(fig):
            raise ValueError("no room for the bars")
        return draw

    monkeypatch.setattr(plots, "_draw_bars", broken)
    out, page = build(tmp_path, CAL_A)
    text = " ".join(page.text)
    assert "could not be drawn (ValueError: no room for the bars)" in text and page.images == []
    assert "could not be drawn" in capsys.readouterr().err
    assert plots.fmt(_records(CAL_A / "results.jsonl")[0]["stats"]["median"]) in page.cells


def test_long_builds_show_progress(tmp_path, monkeypatch, capsys):
    """A build whose charts take seconds each prints where it is (a stepped clock stands in for slow charts)."""
    import harness.report as report

    ticks = iter(range(0, 10_000, 3))
    monkeypatch.setattr(report.time, "monotonic", lambda: float(next(ticks)))
    build_report([copy_run(MIXED, tmp_path / "mixed")], None)
    err = capsys.readouterr().err
    assert re.search(r"report: chart \d+/\d+ \(.+\), \d+ s", err)
    assert re.search(r"report: \d+ chart\(s\) drawn in \d+ s", err)
    # a one-chart build stays quiet: nothing to report before its only chart starts
    monkeypatch.undo()
    build_report([copy_run(CAL_A, tmp_path / "cal")], None)
    assert "chart" not in capsys.readouterr().err


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
        return {"errors": errors, "images": images}
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
