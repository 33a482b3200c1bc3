"""`rapport report`: the Grafana dashboards as one self-contained HTML file.

Every chart comes from a dashboard panel's own SQL, expanded by `projections.dashboards` for
the report's time range and the workspace, and drawn here as inline SVG: no script, no font
or stylesheet from the network, nothing to fetch when the file is opened.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from projections.dashboards import (
    ALL,
    Context,
    Dashboard,
    Panel,
    PanelResult,
    TimeRange,
    column_kinds,
    load_dashboards,
    parse_time,
    run_dashboard,
)
from projections.store import QueryResult, SqlReader

PALETTE = (
    "#3274d9", "#56a64b", "#f2cc0c", "#e02f44", "#ff9830", "#8f3bb8", "#37872d", "#1f60c4",
    "#fade2a", "#c4162a", "#fa6400", "#a352cc",
)  # fmt: skip
PAGE_WIDTH = 1360
ROW_HEIGHT = 30  # Grafana's grid row height in px
TABLE_ROWS = 25
LIVE_TAG = "rapport-live"  # dashboards about the pipeline keep their own (recent) time range


@dataclass(frozen=True)
class DashboardReport:
    dashboard: Dashboard
    context: Context
    results: list[PanelResult]


@dataclass(frozen=True)
class Report:
    workspace: str
    time_range: TimeRange
    generated_at: datetime
    source: str
    dashboards: list[DashboardReport]


def build_report(
    reader: SqlReader,
    workspace: str,
    time_range: TimeRange,
    source: str,
    dashboards: Sequence[Dashboard] | None = None,
    now: datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run every panel of every dashboard for `workspace`; the pipeline dashboards (tagged
    `rapport-live`) over their own default range ending now, the others over `time_range`."""
    now = now or datetime.now(UTC)
    out = []
    for dashboard in dashboards if dashboards is not None else load_dashboards():
        live = LIVE_TAG in dashboard.raw.get("tags", [])
        span = TimeRange.parse_relative(*dashboard.default_time, now=now) if live else time_range
        multi = {v.name: v.multi for v in dashboard.variables}
        given = {"workspace": [workspace] if multi.get("workspace") else workspace}
        context, results = run_dashboard(reader, dashboard, span, given)
        out.append(DashboardReport(dashboard, context, results))
        if progress:
            progress(dashboard.title)
    return Report(workspace, time_range, now, source, out)


# -- values and units ---------------------------------------------------------------------------


def to_datetime(value: Any) -> datetime | None:
    """ClickHouse time values (datetime, date, or the ISO strings the worker sends) in UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        return parse_time(value)
    return None


def duration(seconds: float) -> str:
    """A human duration: 45 s, 12 min, 3.5 h, 2.1 d."""
    size = abs(seconds)
    if size < 90:
        return f"{seconds:.0f} s"
    if size < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if size < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def unit_of(panel: Panel, column: str) -> str:
    """The panel's unit for a column: an override matching it, else the panel default."""
    import re

    for override in panel.raw.get("fieldConfig", {}).get("overrides", []):
        matcher = override.get("matcher", {})
        options = str(matcher.get("options", ""))
        hit = (matcher.get("id") == "byName" and options == column) or (
            matcher.get("id") == "byRegexp" and re.fullmatch(options, column) is not None
        )
        if hit:
            for prop in override.get("properties", []):
                if prop.get("id") == "unit":
                    return str(prop.get("value", ""))
    return panel.unit


def format_value(value: Any, unit: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if unit == "s":
            return duration(float(value))
        return number(float(value))
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    moment = to_datetime(value) if isinstance(value, (datetime, date)) else None
    if moment is None and isinstance(value, str) and len(value) >= 10 and value[4:5] == "-":
        try:
            moment = parse_time(value)
        except ValueError:
            moment = None
    if moment is not None:
        if (moment.hour, moment.minute, moment.second) == (0, 0, 0):
            return moment.strftime("%Y-%m-%d")
        return moment.strftime("%Y-%m-%d %H:%M")
    return str(value)


def nice_step(span: float, ticks: int = 5, integers: bool = False) -> float:
    """A round step (1, 2, 2.5, 5 x 10^n) giving about `ticks` intervals over `span`; at least
    1 for counts."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    if integers and raw < 1:
        return 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def axis_scale(values: Sequence[float], unit: str) -> tuple[float, str]:
    """Divisor and label for an axis: seconds shown as min, h or d when they are large."""
    if unit != "s":
        return 1.0, ""
    top = max((abs(v) for v in values), default=0.0)
    for divisor, label in ((86400.0, "days"), (3600.0, "hours"), (60.0, "minutes")):
        if top >= 2 * divisor:
            return divisor, label
    return 1.0, "seconds"


_TIME_STEPS = (
    3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400,
    91 * 86400, 182 * 86400, 365 * 86400, 2 * 365 * 86400, 5 * 365 * 86400,
)  # fmt: skip


def time_ticks(start: float, end: float, ticks: int = 6) -> list[float]:
    step = next((s for s in _TIME_STEPS if (end - start) / s <= ticks), _TIME_STEPS[-1])
    if step >= 86400:
        first = math.ceil(start / 86400) * 86400
        if step >= 7 * 86400:  # weeks from a Monday (1970-01-05 was one)
            monday = 4 * 86400
            first = monday + math.ceil((start - monday) / step) * step
    else:
        first = math.ceil(start / step) * step
    out = []
    tick = float(first)
    while tick <= end:
        out.append(tick)
        tick += step
    return out


def time_label(epoch: float, span: float) -> str:
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    if span > 400 * 86400:
        return moment.strftime("%Y-%m")
    if span > 2 * 86400:
        return moment.strftime("%b %d")
    return moment.strftime("%H:%M")


# -- SVG ------------------------------------------------------------------------------------------


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


@dataclass(frozen=True)
class Series:
    name: str
    points: list[tuple[float, float | None]]  # (epoch s, value)


def time_series(result: QueryResult) -> list[Series]:
    """Columns to series: the first time column is x; numbers are series; with one text column
    the result is long (time, label, value) and each label becomes a series (Grafana's
    long-to-wide for time series)."""
    kinds = column_kinds(result)
    if "time" not in kinds:
        return []
    t_index = kinds.index("time")
    numeric = [i for i, k in enumerate(kinds) if i != t_index and k in ("number", "other")]
    numeric = [i for i in numeric if all(_is_num(r[i]) for r in result.rows)]
    texts = [i for i, k in enumerate(kinds) if k == "text"]
    times = [to_datetime(r[t_index]) for r in result.rows]
    if texts:
        label_index = texts[0]
        series: dict[str, list[tuple[float, float | None]]] = {}
        for row, moment in zip(result.rows, times, strict=True):
            if moment is None:
                continue
            for i in numeric:
                name = str(row[label_index]) + (f" {result.columns[i]}" if len(numeric) > 1 else "")
                series.setdefault(name, []).append((moment.timestamp(), _num(row[i])))
        return [Series(n, pts) for n, pts in series.items()]
    out = []
    for i in numeric:
        pts = [
            (moment.timestamp(), _num(row[i]))
            for row, moment in zip(result.rows, times, strict=True)
            if moment is not None
        ]
        out.append(Series(result.columns[i], pts))
    return out


def _is_num(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def svg_time_series(
    series: list[Series], span: TimeRange, unit: str, bars: bool, width: int, height: int
) -> str:
    left, right, top, bottom = 64, 12, 10, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    x0, x1 = span.start.timestamp(), span.end.timestamp()
    values = [v for s in series for _, v in s.points if v is not None]
    divisor, axis_label = axis_scale(values, unit)
    low = min(0.0, min(values, default=0.0) / divisor)
    high = max(values, default=1.0) / divisor
    counts = divisor == 1 and all(float(v).is_integer() for v in values)
    step = nice_step(high - low or 1.0, integers=counts)
    high = math.ceil(high / step) * step if high > low else low + step
    low = math.floor(low / step) * step

    def x(t: float) -> float:
        return left + (t - x0) / (x1 - x0) * plot_w

    def y(v: float) -> float:
        return top + plot_h - (v / divisor - low) / (high - low) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">']
    tick = low
    while tick <= high + step / 2:
        ty = top + plot_h - (tick - low) / (high - low) * plot_h
        parts.append(
            f'<line x1="{left}" y1="{ty:.1f}" x2="{left + plot_w}" y2="{ty:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{ty + 4:.1f}" class="tick" text-anchor="end">'
            f"{_e(number(round(tick, 6)))}</text>"
        )
        tick += step
    if axis_label:
        parts.append(
            f'<text x="12" y="{top + plot_h / 2:.0f}" class="tick" text-anchor="middle" '
            f'transform="rotate(-90 12 {top + plot_h / 2:.0f})">{_e(axis_label)}</text>'
        )
    for t in time_ticks(x0, x1):
        tx = x(t)
        parts.append(
            f'<line x1="{tx:.1f}" y1="{top + plot_h}" x2="{tx:.1f}" y2="{top + plot_h + 4}" '
            f'class="axis"/><text x="{tx:.1f}" y="{top + plot_h + 16}" class="tick" '
            f'text-anchor="middle">{_e(time_label(t, x1 - x0))}</text>'
        )
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'class="axis"/>'
    )
    stamps = sorted({t for s in series for t, _ in s.points})
    gaps = [b - a for a, b in itertools.pairwise(stamps) if b > a]
    slot = (min(gaps) if gaps else (x1 - x0) / 50) / (x1 - x0) * plot_w
    bar_w = max(1.0, slot * 0.8 / max(len(series), 1))
    for index, s in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        visible = [(t, v) for t, v in s.points if v is not None and x0 <= t <= x1]
        if bars:
            for t, v in visible:
                bx = x(t) - slot * 0.4 + index * bar_w
                by, base = y(v), y(max(low, 0.0) * divisor)
                parts.append(
                    f'<rect x="{bx:.1f}" y="{min(by, base):.1f}" width="{bar_w:.1f}" '
                    f'height="{abs(base - by):.1f}" fill="{color}"/>'
                )
        elif len(visible) == 1:
            t, v = visible[0]
            parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3" fill="{color}"/>')
        else:
            points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in visible)
            parts.append(
                f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>'
            )
    parts.append("</svg>")
    return "".join(parts)


def svg_bar_chart(result: QueryResult, unit: str, width: int, height: int) -> str:
    kinds = column_kinds(result)
    label_index = kinds.index("text") if "text" in kinds else 0
    numeric = [
        i
        for i, k in enumerate(kinds)
        if i != label_index and k == "number" and all(_is_num(r[i]) for r in result.rows)
    ]
    labels = [str(r[label_index]) for r in result.rows]
    values = [[_num(r[i]) or 0.0 for i in numeric] for r in result.rows]
    left, right, top, bottom = 56, 12, 18, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    flat = [v for row in values for v in row]
    divisor, axis_label = axis_scale(flat, unit)
    high = max((v / divisor for v in flat), default=1.0) or 1.0
    step = nice_step(high, integers=divisor == 1 and all(v.is_integer() for v in flat))
    high = math.ceil(high / step) * step
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">']
    tick = 0.0
    while tick <= high + step / 2:
        ty = top + plot_h - tick / high * plot_h
        parts.append(
            f'<line x1="{left}" y1="{ty:.1f}" x2="{left + plot_w}" y2="{ty:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{ty + 4:.1f}" class="tick" text-anchor="end">'
            f"{_e(number(round(tick, 6)))}</text>"
        )
        tick += step
    if axis_label:
        parts.append(
            f'<text x="12" y="{top + plot_h / 2:.0f}" class="tick" text-anchor="middle" '
            f'transform="rotate(-90 12 {top + plot_h / 2:.0f})">{_e(axis_label)}</text>'
        )
    group = plot_w / max(len(labels), 1)
    bar_w = group * 0.7 / max(len(numeric), 1)
    for g, (label, row) in enumerate(zip(labels, values, strict=True)):
        gx = left + g * group + group * 0.15
        for index, v in enumerate(row):
            bh = v / divisor / high * plot_h
            bx = gx + index * bar_w
            parts.append(
                f'<rect x="{bx:.1f}" y="{top + plot_h - bh:.1f}" width="{bar_w:.1f}" '
                f'height="{bh:.1f}" fill="{PALETTE[index % len(PALETTE)]}">'
                f"<title>{_e(label)}: {_e(format_value(v, unit))}</title></rect>"
            )
            if len(labels) <= 12:
                parts.append(
                    f'<text x="{bx + bar_w / 2:.1f}" y="{top + plot_h - bh - 4:.1f}" '
                    f'class="value" text-anchor="middle">{_e(format_value(v, unit))}</text>'
                )
        shown = label if len(label) <= 18 else label[:17] + "…"
        parts.append(
            f'<text x="{left + g * group + group / 2:.1f}" y="{top + plot_h + 16}" class="tick" '
            f'text-anchor="middle">{_e(shown)}</text>'
        )
    parts.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'class="axis"/></svg>'
    )
    return "".join(parts)


def legend(names: Sequence[str]) -> str:
    items = "".join(
        f'<span class="key"><i style="background:{PALETTE[i % len(PALETTE)]}"></i>{_e(n)}</span>'
        for i, n in enumerate(names)
    )
    return f'<div class="legend">{items}</div>'


def render_stat(panel: Panel, result: QueryResult) -> str:
    if not result.rows:
        return '<div class="nodata">No data</div>'
    row = result.rows[0]
    cells = "".join(
        f'<div class="stat"><div class="big" style="color:{PALETTE[i % len(PALETTE)]}">'
        f"{_e(format_value(v, unit_of(panel, c)) or '-')}</div>"
        f'<div class="name">{_e(c.replace("_", " "))}</div></div>'
        for i, (c, v) in enumerate(zip(result.columns, row, strict=True))
    )
    return f'<div class="stats">{cells}</div>'


def render_table(panel: Panel, result: QueryResult) -> str:
    if not result.rows:
        return '<div class="nodata">No data</div>'
    head = "".join(f"<th>{_e(c)}</th>" for c in result.columns)
    kinds = column_kinds(result)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"num" if k == "number" else "wrap" if len(str(v)) > 40 else ""}">'
            f"{_e(format_value(v, unit_of(panel, c)))}</td>"
            for c, v, k in zip(result.columns, row, kinds, strict=True)
        )
        + "</tr>"
        for row in result.rows[:TABLE_ROWS]
    )
    more = (
        f'<div class="more">first {TABLE_ROWS} of {len(result.rows)} rows</div>'
        if len(result.rows) > TABLE_ROWS
        else ""
    )
    return f'<div class="table"><table><tr>{head}</tr>{body}</table></div>{more}'


def render_panel(panel: PanelResult, span: TimeRange) -> str:
    p, result = panel.panel, panel.result
    width = int(p.grid["w"] * PAGE_WIDTH / 24) - 26
    height = max(p.grid["h"] * ROW_HEIGHT - 56, 90)
    if p.type == "stat":
        body = render_stat(p, result)
    elif p.type == "table":
        body = render_table(p, result)
    elif not result.rows:
        body = '<div class="nodata">No data</div>'
    elif p.type == "barchart":
        kinds = column_kinds(result)
        names = [c for c, k in zip(result.columns, kinds, strict=True) if k == "number"]
        body = svg_bar_chart(result, p.unit, width, height - 22) + legend(names)
    else:
        series = time_series(result)
        bars = p.raw.get("fieldConfig", {}).get("defaults", {}).get("custom", {}).get(
            "drawStyle"
        ) == ("bars")
        body = svg_time_series(series, span, p.unit, bars, width, height - 22) + legend(
            [s.name for s in series]
        )
    description = f'<p class="desc">{_e(p.description)}</p>' if p.description else ""
    return (
        f'<section class="panel" style="grid-column: span {p.grid["w"]}">'
        f"<h3>{_e(p.title)}</h3>{description}{body}"
        f"<details><summary>SQL</summary><pre>{_e(panel.sql)}</pre></details></section>"
    )


CSS = """
body { font-family: "Liberation Sans", Arial, Helvetica, sans-serif; margin: 0; color: #1f2328;
       background: #f4f5f5; }
header { background: #111217; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 6px; font-size: 24px; }
header p { margin: 2px 0; color: #ccccdc; font-size: 13px; }
main { width: 1360px; margin: 0 auto; padding: 8px 0 40px; }
h2 { margin: 26px 0 2px; font-size: 19px; }
.vars { color: #5b5f66; font-size: 12px; margin: 0 0 8px; }
.grid { display: grid; grid-template-columns: repeat(24, 1fr); gap: 8px; }
.panel { background: #fff; border: 1px solid #d8d9da; border-radius: 4px; padding: 8px 12px;
         overflow: hidden; }
.panel h3 { margin: 0 0 2px; font-size: 14px; }
.desc { margin: 0 0 4px; color: #6e7177; font-size: 11px; }
.stats { display: flex; flex-wrap: wrap; gap: 10px 26px; padding: 6px 0; }
.stat .big { font-size: 30px; font-weight: bold; }
.stat .name { font-size: 11px; color: #5b5f66; }
svg text.tick { font-size: 11px; fill: #5b5f66; }
svg text.value { font-size: 10px; fill: #1f2328; }
svg line.grid { stroke: #e6e7e8; } svg line.axis { stroke: #9a9ca0; }
.legend { font-size: 11px; color: #3d4046; } .key { margin-right: 14px; white-space: nowrap; }
.key i { display: inline-block; width: 12px; height: 4px; margin-right: 5px;
         vertical-align: middle; }
.table { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; width: 100%; }
th { text-align: left; background: #f0f1f2; padding: 3px 6px; white-space: nowrap; }
td { border-top: 1px solid #ececec; padding: 3px 6px; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.wrap { white-space: normal; min-width: 220px; }
.more, .nodata { color: #8e9096; font-size: 12px; padding: 6px 0; }
details { font-size: 11px; color: #6e7177; } pre { white-space: pre-wrap; font-size: 10px; }
"""


def _selection_text(context: Context) -> str:
    parts = []
    for name, value in context.selection.items():
        shown = "All" if value in (ALL, [ALL]) else value
        if isinstance(shown, list):
            shown = ", ".join(shown)
        parts.append(f"{name} = {shown}")
    span = context.time_range
    parts.append(f"time {span.start:%Y-%m-%d %H:%M} .. {span.end:%Y-%m-%d %H:%M} UTC")
    return "; ".join(parts)


def render_html(report: Report) -> str:
    sections = []
    for item in report.dashboards:
        panels = "".join(render_panel(r, item.context.time_range) for r in item.results)
        sections.append(
            f"<h2>{_e(item.dashboard.title)}</h2>"
            f'<p class="vars">{_e(item.dashboard.description)} '
            f"({_e(_selection_text(item.context))})</p>"
            f'<div class="grid">{panels}</div>'
        )
    span = report.time_range
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>Rapport report: {_e(report.workspace)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<header><h1>Rapport: {_e(report.workspace)}</h1>"
        f"<p>{span.start:%Y-%m-%d %H:%M} to {span.end:%Y-%m-%d %H:%M} UTC"
        f" &middot; generated {report.generated_at:%Y-%m-%d %H:%M} UTC from {_e(report.source)}</p>"
        "<p>Every chart is a Grafana dashboard panel's own SQL (deploy/grafana/dashboards), "
        "run for this range and workspace.</p></header>"
        f"<main>{''.join(sections)}</main></body></html>\n"
    )


def default_range(extent: TimeRange | None, now: datetime | None = None) -> TimeRange:
    """The data's own extent, or the last 90 days when there is none."""
    if extent is not None:
        return extent
    now = now or datetime.now(UTC)
    return TimeRange(now - timedelta(days=90), now)
