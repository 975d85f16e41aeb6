"""Drawing the planned charts (views.py) with matplotlib's Agg backend into PNG files; nothing is decided here.

Legends sit outside the axes (below them), so they never cover a bar or a line; values on a log axis are dots,
since a bar's length means nothing there.
"""
from __future__ import annotations

import re
from pathlib import Path

from .records import BASE_WORKERS, fmt, slug
from .views import Chart, CurvesPlot, DotsPlot, LatencyPlot, PredictionPlot, ScalingPlot

DPI = 100
WIDTH_IN = 10.0


def clear_old(plot_dir: Path) -> None:
    """Removes PNGs an earlier report wrote here (numbered names), so plots/ matches the page."""
    for p in plot_dir.glob("*.png"):
        if re.match(r"^\d{3,}-", p.name):
            p.unlink()


def render(chart: Chart, plot_dir: Path, index: int) -> Path:
    """Draws one chart to plot_dir/NNN-<title>.png."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    drawer = {DotsPlot: draw_dots, ScalingPlot: draw_scaling, CurvesPlot: draw_curves,
              LatencyPlot: draw_latency, PredictionPlot: draw_prediction}[type(chart.plot)]
    fig = Figure(figsize=(WIDTH_IN, min(max(chart.height_in, 3.0), 30.0)), dpi=DPI, layout="constrained")
    drawer(fig, chart.plot)
    fig.suptitle(chart.title, fontsize=11)
    path = plot_dir / f"{index:03d}-{slug(chart.title)}.png"
    fig.savefig(path)
    chart.png = path
    return path


def _palette(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(max(n, 1))]


def _legend_below(fig, handles: list, title: str = "") -> None:
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8,
                   title=title or None, title_fontsize=8, frameon=False)


def draw_dots(fig, plot: DotsPlot) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ax = fig.add_subplot(111)
    colors = dict(zip(plot.series, _palette(len(plot.series))))
    y, ticks, labels, headers = 0.0, [], [], []
    limit_names = []
    for g in plot.groups:
        if g.title:
            ticks.append(y)
            labels.append(g.title)
            headers.append(len(labels) - 1)
            y += 1
        start = y
        for p in g.points:
            color = colors[p.series]
            if plot.log:
                ax.plot([p.value], [y], "o", color=color, ms=6, zorder=3)
            else:
                ax.barh(y, p.value, color=color, height=0.7, zorder=2)
            ax.errorbar(p.value, y, xerr=[[max(p.value - p.low, 0)], [max(p.high - p.value, 0)]], fmt="none",
                        ecolor="black", capsize=3, lw=1, zorder=4)
            ax.annotate(fmt(p.value), (max(p.high, p.value), y), xytext=(7, 0), textcoords="offset points",
                        va="center", fontsize=7)
            ticks.append(y)
            labels.append(p.label)
            y += 1
        if g.limit is not None:
            ax.vlines(g.limit.value, start - 0.45, y - 0.55, colors="black", linestyles="--", lw=1.5, zorder=5)
            if g.limit.label not in limit_names:
                limit_names.append(g.limit.label)
        y += 0.5
    ax.set_yticks(ticks, labels, fontsize=8)
    for i in headers:
        ax.get_yticklabels()[i].set_fontweight("bold")
    ax.invert_yaxis()
    from matplotlib.ticker import FuncFormatter, LogLocator

    if plot.log:
        ax.set_xscale("log")
        # 1-2-5 ticks: a reader compares values, not powers of ten
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.grid(axis="both", which="major", alpha=0.3)
    else:
        ax.set_xlim(left=0)
        ax.grid(axis="x", alpha=0.3)
    # plain numbers (2,000,000), never an offset or exponent written apart at the axis' end
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:g}"))
    ax.margins(x=0.12)  # room for the value printed beside each whisker
    ax.set_xlabel(plot.axis_label)
    handles = [Line2D([], [], color="black", ls="--", lw=1.5, label=f"{name} (limit)") for name in limit_names]
    if plot.legend_title:
        handles = [Patch(color=colors[s], label=s) for s in plot.series] + handles
    _legend_below(fig, handles, plot.legend_title)


def draw_scaling(fig, plot: ScalingPlot) -> None:
    from matplotlib.lines import Line2D

    ax1, ax2 = fig.subplots(1, 2)
    colors = _palette(len(plot.lines))
    all_n = sorted({pt[0] for line in plot.lines for pt in line.points})
    handles = []
    for line, color in zip(plot.lines, colors):
        ns = [pt[0] for pt in line.points]
        vs = [pt[1] for pt in line.points]
        err = [[max(pt[1] - pt[2], 0) for pt in line.points], [max(pt[3] - pt[1], 0) for pt in line.points]]
        ax1.errorbar(ns, vs, yerr=err, fmt="o-", color=color, capsize=3)
        handles.append(Line2D([], [], color=color, marker="o", label=line.name))
        if line.base:
            ax1.plot(ns, [line.base * n / BASE_WORKERS for n in ns], ":", color=color, alpha=0.8)
            effs = [(pt[0], pt[4]) for pt in line.points if pt[4] is not None]
            ax2.plot([e[0] for e in effs], [e[1] for e in effs], "o-", color=color)
    ax2.axhline(1.0, color="gray", ls=":")
    handles.append(Line2D([], [], color="gray", ls=":", label="ideal (linear scaling, 100% efficiency)"))
    for ax in (ax1, ax2):
        ax.set_xticks(all_n)
        ax.set_xlabel("workers (processes)")
        ax.grid(alpha=0.3)
    ax1.set_ylabel(f"throughput: {plot.axis_label}")
    ax1.set_title("throughput (median)", fontsize=9)
    ax1.set_ylim(bottom=0)
    ax2.set_ylabel("efficiency (fraction of ideal)")
    ax2.set_title("efficiency", fontsize=9)
    ax2.set_ylim(0, 1.15)
    _legend_below(fig, handles)


def draw_prediction(fig, plot: PredictionPlot) -> None:
    from matplotlib.lines import Line2D

    ax = fig.add_subplot(111)
    colors = dict(zip([name for name, _, _ in plot.lines], _palette(len(plot.lines))))
    handles = []
    for name, ns, effs in plot.lines:
        ax.plot(ns, effs, "-", color=colors[name])
        handles.append(Line2D([], [], color=colors[name], marker="o", label=f"{name}: predicted (line), measured"))
    for name, n, eff, lo, hi, missed in plot.points:
        color = colors.get(name, "black")
        ax.errorbar([n], [eff], yerr=[[max(eff - lo, 0)], [max(hi - eff, 0)]], fmt="o", color=color, capsize=3)
        if missed:
            ax.plot([n], [eff], "o", ms=14, mfc="none", mec="red", mew=1.5)
    if any(p[5] for p in plot.points):
        handles.append(Line2D([], [], ls="", marker="o", ms=10, mfc="none", mec="red",
                              label="missed by the model (> 25%)"))
    ax.axhline(1.0, color="gray", ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("workers (log scale)")
    ax.set_ylabel("efficiency = throughput(N) / (N x throughput(1))")
    ax.set_ylim(0, 1.15)
    ax.grid(alpha=0.3)
    _legend_below(fig, handles)


def draw_curves(fig, plot: CurvesPlot) -> None:
    from matplotlib.lines import Line2D

    ax = fig.add_subplot(111)
    handles = []
    for (name, pts), color in zip(plot.lines, _palette(len(plot.lines))):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", marker=".", color=color)
        ax.plot([pts[-1][0]], [pts[-1][1]], "o", color=color)
        handles.append(Line2D([], [], color=color, marker=".", label=name))
    if plot.target is not None:
        ax.axhline(plot.target, color="black", ls="--", lw=1)
        handles.append(Line2D([], [], color="black", ls="--", label=f"target {plot.metric} = {fmt(plot.target)}"))
    ax.set_xlabel("wall time since training start (s)")
    ax.set_ylabel(f"test {plot.metric}")
    ax.grid(alpha=0.3)
    _legend_below(fig, handles)


def draw_latency(fig, plot: LatencyPlot) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax1, ax2 = fig.subplots(1, 2)
    handles = []
    for (q, values), color in zip(plot.latencies.items(), _palette(len(plot.latencies))):
        pts = [(x, v, ok) for x, v, ok in zip(plot.rates, values, plot.kept_up) if v is not None]
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=color)
        for x, v, ok in pts:  # hollow: this rate did not keep up
            ax1.plot([x], [v], "o", color=color, mfc=color if ok else "white")
        handles.append(Line2D([], [], color=color, marker="o", label=f"{q} latency"))
    sustained = [(x, v) for x, v in zip(plot.rates, plot.sustained) if v is not None]
    ax2.plot([p[0] for p in sustained], [p[1] for p in sustained], "o-", color="black")
    ax2.plot(plot.rates, plot.rates, ":", color="gray")
    handles += [Line2D([], [], color="black", marker="o", label="sustained rows/s"),
                Line2D([], [], color="gray", ls=":", label="sustained = offered"),
                Line2D([], [], marker="o", mfc="white", color="gray", ls="", label="did not keep up")]
    if plot.knee is not None:
        for ax in (ax1, ax2):
            ax.axvline(plot.knee, color="black", ls="--", lw=1)
        handles.append(Line2D([], [], color="black", ls="--", label=f"knee: {fmt(plot.knee)} rows/s"))
    for ax in (ax1, ax2):
        if len(plot.rates) > 1 and max(plot.rates) / max(min(plot.rates), 1e-9) > 10:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_xlabel("input rate offered (rows/s)")
        ax.grid(alpha=0.3)
    ax1.set_ylabel("end-to-end latency (s)")
    ax1.set_ylim(bottom=0)
    ax1.set_title("latency percentiles", fontsize=9)
    ax2.set_ylabel("rows/s processed")
    ax2.set_title("sustained throughput", fontsize=9)
    _legend_below(fig, handles)
