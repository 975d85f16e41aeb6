"""The report page: one HTML file, styles inline, charts embedded as base64 PNGs, no scripts, no network.

Every text taken from records or env.json is escaped (error messages quote arbitrary output).
"""
from __future__ import annotations

import base64
import html
import re
from datetime import datetime
from typing import Any

from ..record import STATUSES
from .answers import Answer
from .records import fmt, params_text
from .views import Chart, Section, Table

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1180px;
padding:0 18px 60px;color:#1d1d1f}
h1{font-size:24px;margin:22px 0 4px}h2{font-size:19px;margin:34px 0 8px;border-bottom:2px solid #ddd;
padding-bottom:3px}h3{font-size:15px;margin:20px 0 6px}
.muted{color:#666}.box{border:1px solid #e0b252;background:#fff8e6;padding:8px 12px;margin:12px 0;border-radius:4px}
.box.bad{border-color:#d9534f;background:#fdeeee}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 4px}th,td{border:1px solid #ddd;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f4f4f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto;max-width:100%}figure{margin:14px 0 26px}figure img{max-width:100%;height:auto;
border:1px solid #eee}figcaption{font-size:12.5px;color:#444;margin:4px 0}
.st-ok{color:#18794e}.st-error,.st-timeout{color:#c0392b;font-weight:600}.st-unavailable,.st-skipped{color:#8a6d00}
pre{white-space:pre-wrap;font-size:11.5px;background:#f7f7f7;padding:6px;max-height:320px;overflow:auto}
nav ul{columns:2;margin:4px 0}code{font-size:12.5px}
table.answers{font-size:13.5px;width:100%}table.answers th{width:22%;background:#f4f7fb}
table.answers ul{margin:3px 0 0 0;padding-left:18px;font-size:12px;color:#444}
table.answers tr.unmeasured td,table.answers tr.unmeasured th{color:#888;background:#fafafa}
"""

PACKAGES = ("pyspark", "pyarrow", "numpy", "pandas", "petastorm", "torch", "tensorflow-cpu", "tensorflow",
            "keras", "horovod", "mlflow")


def e(v: Any) -> str:
    return html.escape(str(v), quote=True)


NUMBER = re.compile(r"[-+]?\d[\d.,]*(e[-+]?\d+)?[×%]?( – [-+]?\d[\d.,]*(e[-+]?\d+)?)?")


def _num(cell: str) -> bool:
    """Numbers (and CI ranges) are right-aligned so columns of figures line up."""
    return NUMBER.fullmatch(cell) is not None


def table(t: Table) -> str:
    head = "".join(f"<th>{e(c)}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f'<td class="num">{e(c)}</td>' if _num(c) else f"<td>{e(c)}</td>" for c in row)
                   + "</tr>" for row in t.rows)
    cap = f'<figcaption>{e(t.caption)}</figcaption>' if t.caption else ""
    return f'{cap}<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def figure(c: Chart) -> str:
    img = ""
    if c.png is not None:
        data = base64.b64encode(c.png.read_bytes()).decode("ascii")
        img = (f'<img src="data:image/png;base64,{data}" alt="{e(c.title)}" '
               f'data-file="plots/{e(c.png.name)}">')
    elif c.failed:
        img = f"<p class='box bad'>This chart could not be drawn ({e(c.failed)}); its numbers are below.</p>"
    png = f" PNG: <code>plots/{e(c.png.name)}</code>" if c.png is not None else ""
    note = f"<figcaption>{e(c.note)}{png}</figcaption>"
    return f"<figure><h3>{e(c.title)}</h3>{img}{note}{table(c.table)}</figure>"


def _when(ts: str) -> datetime | None:
    try:
        return datetime.fromisoformat(ts)
    except (TypeError, ValueError):
        return None


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d} (m:s)"


def run_facts(run) -> dict[str, str]:
    """The summary's rows for one run: where, what, when."""
    env = run.env or {}
    m, spark, git = env.get("machine", {}), env.get("spark") or {}, env.get("git", {})
    starts = [t for t in (_when(r.started_at) for r in run.results) if t]
    ends = [t for t in (_when(r.ended_at) for r in run.results) if t]
    gpu = env.get("gpu", {})
    missing = "— (no env.json)" if run.env is None else "—"
    pk = env.get("packages", {})
    facts = {
        "run id": run.label,
        "folder": str(run.path),
        "date (UTC)": min(starts).strftime("%Y-%m-%d %H:%M:%S") if starts else env.get("captured_at", missing),
        "run time": _duration((max(ends) - min(starts)).total_seconds()) if starts and ends else missing,
        "machine": (f"{m.get('cpu_model')}, {m.get('cores')} cores ({m.get('cores_available')} available), "
                    f"{m.get('memory_gb')} GB RAM, {m.get('arch')}, host {m.get('hostname')}" if m else missing),
        "GPU": (f"{gpu.get('count')}× " + ", ".join(gpu.get("names", [])) + f", driver {gpu.get('driver')}, "
                f"CUDA {gpu.get('cuda_driver')}" if gpu.get("count") else ("none" if gpu else missing)),
        "OS": f"{env['os'].get('system')} {env['os'].get('release')}" if env.get("os") else missing,
        "Python / Java": (f"{env.get('python', {}).get('version')} / {env.get('java') or 'missing'}"
                          if env else missing),
        "Spark": (f"{spark.get('version')}, master {spark.get('master')}, {spark.get('default_parallelism')} "
                  f"cores (default parallelism), session start-up {fmt(spark.get('startup_s'))} s"
                  if spark else ("not started in this run" if env else missing)),
        "versions": ", ".join(f"{k} {v}" for k, v in pk.items() if v and k in PACKAGES) or missing,
        "git commit": (f"{git.get('commit') or 'unknown'}" + (" (uncommitted changes)" if git.get("dirty") else "")
                       if git else missing),
        "env id": env.get("env_id") or (run.results[0].env_id if run.results else missing),
    }
    return facts


def status_counts(run) -> dict[str, int]:
    counts = {s: 0 for s in STATUSES}
    for r in run.results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def summary(runs) -> str:
    parts = ["<h2 id='summary'>Summary</h2>"]
    facts = [run_facts(r) for r in runs]
    rows = "".join(f"<tr><th>{e(k)}</th>" + "".join(f"<td>{e(f[k])}</td>" for f in facts) + "</tr>"
                   for k in facts[0])
    counts = [status_counts(r) for r in runs]
    rows += "".join(f"<tr><th>cases {e(s)}</th>"
                    + "".join(f'<td class="num st-{s}">{c[s]}</td>' for c in counts) + "</tr>"
                    for s in STATUSES if any(c[s] for c in counts) or s in ("ok", "error"))
    parts.append(f'<div class="scroll"><table><tbody>{rows}</tbody></table></div>')
    failed = [(run, r) for run in runs for r in run.results if r.status != "ok"]
    if failed:
        parts.append("<h3 id='problems'>Cases that did not finish ok</h3>")
        items = []
        for run, r in failed:
            msg = ((r.error or {}).get("message") or "").strip()
            first = msg.splitlines()[0] if msg else "(no message recorded)"
            more = f"<details><summary>full message</summary><pre>{e(msg)}</pre></details>" if "\n" in msg else ""
            where = f"{e(run.label)}: " if len(runs) > 1 else ""
            items.append(f"<tr><td class='st-{e(r.status)}'>{e(r.status)}</td><td>{where}{e(r.name)}</td>"
                         f"<td>{e(params_text(r.params))}</td><td>{e((r.error or {}).get('type', ''))}</td>"
                         f"<td>{e(first)}{more}</td></tr>")
        parts.append('<div class="scroll"><table><thead><tr><th>status</th><th>case</th><th>params</th>'
                     f'<th>type</th><th>reason</th></tr></thead><tbody>{"".join(items)}</tbody></table></div>')
    return "".join(parts)


def answers_section(answered: list[tuple[str, list[Answer]]]) -> str:
    """The questions the harness exists for, one row each: the verdict in bold, its evidence below it."""
    parts = ["<h2 id='answers'>Answers</h2><p class='muted'>A winner is named only when its confidence interval "
             "is clear of the runner-up's; where they overlap the answer says there is no clear difference.</p>"]
    for run_label, answers in answered:
        if len(answered) > 1:
            parts.append(f"<h3>{e(run_label)}</h3>")
        rows = []
        for a in answers:
            ev = "<ul>" + "".join(f"<li>{e(x)}</li>" for x in a.evidence) + "</ul>" if a.evidence else ""
            cls = "" if a.measured else " class='unmeasured'"
            rows.append(f"<tr{cls}><th>{e(a.question)}</th><td><b>{e(a.verdict)}</b>{ev}</td></tr>")
        parts.append(f"<table class='answers'><tbody>{''.join(rows)}</tbody></table>")
    return "".join(parts)


def page(runs, sections: list[Section], answered: list[tuple[str, list[Answer]]]) -> str:
    title = (f"Benchmark report: run {runs[0].label}" if len(runs) == 1
             else f"Benchmark report: {len(runs)} runs ({', '.join(r.label for r in runs)})")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style></head><body>",
             f"<h1>{e(title)}</h1><p class='muted'>Made by <code>harness report</code>. Times are medians of the "
             "measured repeats (warm-ups kept apart); whiskers are distribution-free confidence intervals of the "
             "median, labelled with their real coverage (it depends on the number of repeats). Every chart's "
             "numbers are in the table below it.</p>"]
    problems = [p for r in runs for p in r.problems]
    if problems:
        parts.append("<div class='box bad'><b>Input problems</b> (the rest of the report was still built):<ul>"
                     + "".join(f"<li>{e(p)}</li>" for p in problems) + "</ul></div>")
    toc = ["<li><a href='#answers'>Answers</a></li>", "<li><a href='#summary'>Summary</a></li>"]
    toc += [f"<li><a href='#{e(s.anchor)}'>{e(s.title)}</a></li>" for s in sections]
    parts.append("<nav><ul>" + "".join(toc) + "</ul></nav>")
    parts.append(answers_section(answered))
    parts.append(summary(runs))
    for s in sections:
        parts.append(f"<h2 id='{e(s.anchor)}'>{e(s.title)}</h2>")
        if s.intro:
            parts.append(f"<p>{e(s.intro)}</p>")
        for item in s.items:
            if isinstance(item, Chart):
                parts.append(figure(item))
            elif isinstance(item, Table):
                parts.append(f"<figure>{table(item)}</figure>")
            else:
                parts.append(f"<p class='box'>{e(item)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
