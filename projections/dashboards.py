"""The Grafana dashboards as data: load their JSON, expand their SQL as the plugin does, run it.

One implementation of what grafana-clickhouse-datasource does to a panel's SQL before
ClickHouse sees it, used by `rapport report` and by the test that runs every panel:

1. `$__conditionalAll(condition, $var)` (the plugin's frontend, `applyConditionalAll`): the
   condition, or `1=1` when the variable's value is All (`$__all`) or empty. Arguments are split
   at top-level commas, counting parentheses.
2. Dashboard variables (Grafana's template service with the plugin's formatter): `$var` and
   `${var}`; a multi-value becomes `'a','b'`, a single value is inserted as is (so SQL quotes it:
   `workspace = '${workspace}'`), All becomes every option (or the variable's `allValue`).
   Unlike Grafana, a `'` or `\\` inside a value is escaped. Grafana's `$__from`/`$__to` (epoch
   ms) and `$__interval`/`$__interval_ms` are replaced too.
3. The backend macros (pkg/macros of the plugin, applied through grafana/sqlds with the regex
   `\\$__name\\b(?:\\((.*?)\\))?`, so macro arguments cannot contain parentheses):
   `$__timeFilter(c)` -> `c >= toDateTime(<from s>) AND c <= toDateTime(<to s>)`,
   `$__timeFilter_ms(c)` with `fromUnixTimestamp64Milli(<ms>)`, `$__fromTime`/`$__toTime` ->
   `toDateTime(<s>)`, `$__fromTime_ms`/`$__toTime_ms`, `$__dateFilter(c)` ->
   `c >= toDate('YYYY-MM-DD') AND c <= toDate('YYYY-MM-DD')`, `$__dateTimeFilter(d, t)` (alias
   `$__dt`), `$__timeInterval(c)` -> `toStartOfInterval(toDateTime(c), INTERVAL <s> second)`,
   `$__timeInterval_ms(c)`, `$__interval_s`.

The interval follows Grafana: the time range divided by the panel's max data points, rounded
to Grafana's ladder of intervals, and never below the panel's `interval` (its min interval).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from projections.store import QueryResult, SqlReader

DASHBOARDS_DIR = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards"
DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "rapport-clickhouse"}
ALL = "$__all"
DEFAULT_MAX_DATA_POINTS = 200

Value = str | list[str]


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for moment in (self.start, self.end):
            if moment.tzinfo is None:
                raise ValueError("time range bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"empty time range: {self.start} .. {self.end}")

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    @classmethod
    def parse_relative(cls, start: str, end: str, now: datetime | None = None) -> TimeRange:
        """Grafana's `now-90d` .. `now` (units s, m, h, d, w, M=30d, y=365d) or ISO 8601."""
        now = now or datetime.now(UTC)
        return cls(_moment(start, now), _moment(end, now))


_RELATIVE = re.compile(r"^now(?:-(\d+)([smhdwMy]))?(?:/[smhdwMy])?$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "M": 30 * 86400}
_UNIT_S["y"] = 365 * 86400


def _moment(text: str, now: datetime) -> datetime:
    found = _RELATIVE.match(text)
    if found:
        amount, unit = found.groups()
        return now - timedelta(seconds=int(amount or 0) * _UNIT_S.get(unit or "s", 1))
    return parse_time(text)


def parse_time(text: str) -> datetime:
    """ISO 8601 (a date alone means its midnight); naive times are UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# Grafana's rangeutil.roundInterval ladder: (upper bound of the raw interval, rounded interval).
_LADDER_MS = (
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1_500, 1_000),
    (3_500, 2_000), (7_500, 5_000), (12_500, 10_000), (17_500, 15_000), (25_000, 20_000),
    (45_000, 30_000), (90_000, 60_000), (210_000, 120_000), (450_000, 300_000),
    (750_000, 600_000), (1_050_000, 900_000), (1_500_000, 1_200_000), (2_700_000, 1_800_000),
    (5_400_000, 3_600_000), (9_000_000, 7_200_000), (16_200_000, 10_800_000),
    (32_400_000, 21_600_000), (86_400_000, 43_200_000), (604_800_000, 86_400_000),
    (1_814_400_000, 604_800_000), (3_628_800_000, 2_592_000_000),
)  # fmt: skip


def round_interval_ms(raw_ms: float) -> int:
    for bound, rounded in _LADDER_MS:
        if raw_ms < bound:
            return rounded
    return 31_536_000_000  # a year


def parse_duration_s(text: str) -> float:
    """`30s`, `5m`, `1h`, `1d`, `1w` (Grafana's panel min interval) -> seconds."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|M|y)", text.strip())
    if not found:
        raise ValueError(f"not a duration: {text!r}")
    amount, unit = float(found.group(1)), found.group(2)
    return amount / 1000 if unit == "ms" else amount * _UNIT_S[unit]


def interval_seconds(
    time_range: TimeRange, max_data_points: int = DEFAULT_MAX_DATA_POINTS, min_interval: str = ""
) -> float:
    """The query interval Grafana would use (what `$__timeInterval` and `$__interval_s` get)."""
    seconds = round_interval_ms(time_range.seconds * 1000 / max(max_data_points, 1)) / 1000
    if min_interval:
        seconds = max(seconds, parse_duration_s(min_interval))
    return seconds


def _grafana_duration(seconds: float) -> str:
    """How Grafana prints `$__interval` (e.g. 30s, 5m, 1h, 1d)."""
    for unit, size in (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds >= 1:
        return f"{int(seconds)}s"
    return f"{int(seconds * 1000)}ms"


# -- 1. $__conditionalAll (plugin frontend) ------------------------------------------------------

_CONDITIONAL_ALL = "$__conditionalAll("
_VAR_IN_ARG = re.compile(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+")


def _macro_args(sql: str, open_index: int) -> list[str] | None:
    """Arguments of the call whose `(` is at `open_index`, split at depth-1 commas (the plugin's
    getMacroArgs); None when the parentheses never close."""
    args: list[str] = []
    depth = 0
    start = open_index + 1
    for index in range(open_index, len(sql)):
        char = sql[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 1:
            args.append(sql[start:index])
            start = index + 1
        if depth == 0:
            args.append(sql[start:index])
            return args
    return None


def apply_conditional_all(sql: str, selection: Mapping[str, Value]) -> str:
    index = sql.rfind(_CONDITIONAL_ALL)
    while index != -1:
        args = _macro_args(sql, index + len(_CONDITIONAL_ALL) - 1)
        if args is None or len(args) != 2:
            return sql
        phrase = args[0]
        name = _VAR_IN_ARG.search(args[1].strip())
        if name:
            value = selection.get(name.group(0))
            text = ",".join(value) if isinstance(value, list) else (value or "")
            if text in ("", ALL):
                phrase = "1=1"
        sql = sql.replace(f"{_CONDITIONAL_ALL}{args[0]},{args[1]})", phrase)
        index = sql.rfind(_CONDITIONAL_ALL)
    return sql


# -- 2. template variables (Grafana's template service, the plugin's formatter) ----------------

# Grafana's variable regex: $name, [[name]], ${name}, ${name:format}, ${name.field}.
_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}"
)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _format(value: Value) -> str:
    if isinstance(value, list):
        return "'" + "','".join(_quote(v) for v in value) + "'"
    return _quote(value)


def replace_variables(
    sql: str,
    selection: Mapping[str, Value],
    all_values: Mapping[str, Value] | None = None,
    builtins: Mapping[str, str] | None = None,
) -> str:
    all_values = all_values or {}
    builtins = builtins or {}

    def substitute(found: re.Match[str]) -> str:
        name = found.group(1) or found.group(2) or found.group(4)
        if name in builtins:
            return builtins[name]
        if name not in selection:
            return found.group(0)  # not a variable of this dashboard: left for the backend
        value = selection[name]
        if value == ALL or value == [ALL]:
            value = all_values.get(name, [])
        return _format(value)

    return _VARIABLE.sub(substitute, sql)


# -- 3. backend macros (pkg/macros through sqlds) -----------------------------------------------


def _seconds(moment: datetime) -> int:
    return math.floor(moment.timestamp())


def _millis(moment: datetime) -> int:
    return math.floor(moment.timestamp() * 1000)


def _date(moment: datetime) -> str:
    return f"toDate('{moment.astimezone(UTC).strftime('%Y-%m-%d')}')"


def _backend_macros(
    time_range: TimeRange, interval_s: float
) -> dict[str, Callable[[list[str]], str]]:
    start, end = time_range.start, time_range.end
    dt_start, dt_end = f"toDateTime({_seconds(start)})", f"toDateTime({_seconds(end)})"
    ms_start = f"fromUnixTimestamp64Milli({_millis(start)})"
    ms_end = f"fromUnixTimestamp64Milli({_millis(end)})"

    def one(args: list[str], name: str) -> str:
        if len(args) != 1:
            raise ValueError(f"$__{name}: expected 1 argument, received {len(args)}")
        return args[0]

    def date_time_filter(args: list[str]) -> str:
        if len(args) != 2:
            raise ValueError(f"$__dateTimeFilter: expected 2 arguments, received {len(args)}")
        d, t = args
        return (
            f"({d} >= {_date(start)} AND {d} <= {_date(end)}) AND "
            f"({t} >= {dt_start} AND {t} <= {dt_end})"
        )

    def filter_with(name: str, low: str, high: str) -> Callable[[list[str]], str]:
        def expand(args: list[str]) -> str:
            column = one(args, name)
            return f"{column} >= {low} AND {column} <= {high}"

        return expand

    seconds = int(max(interval_s, 1))
    millis = int(max(interval_s * 1000, 1))
    return {
        "fromTime": lambda args: dt_start,
        "toTime": lambda args: dt_end,
        "fromTime_ms": lambda args: ms_start,
        "toTime_ms": lambda args: ms_end,
        "timeFilter": filter_with("timeFilter", dt_start, dt_end),
        "timeFilter_ms": filter_with("timeFilter_ms", ms_start, ms_end),
        "dateFilter": filter_with("dateFilter", _date(start), _date(end)),
        "dateTimeFilter": date_time_filter,
        "dt": date_time_filter,
        "timeInterval": lambda args: (
            f"toStartOfInterval(toDateTime({one(args, 'timeInterval')}), INTERVAL {seconds} second)"
        ),
        "timeInterval_ms": lambda args: (
            f"toStartOfInterval(toDateTime64({one(args, 'timeInterval_ms')}, 3), "
            f"INTERVAL {millis} millisecond)"
        ),
        "interval_s": lambda args: str(seconds),
    }


def apply_macros(sql: str, time_range: TimeRange, interval_s: float) -> str:
    """sqlds replaces each match's text everywhere (`strings.Replace`), in Go's random map order,
    so `$__fromTime` could also hit the front of `$__fromTime_ms`; here only the matched spans
    are replaced, which is what a query gets whenever the plugin's order is the lucky one."""
    for name, macro in _backend_macros(time_range, interval_s).items():
        pattern = re.compile(rf"\$__{name}\b(?:\((.*?)\))?")

        def substitute(found: re.Match[str], macro: Callable[[list[str]], str] = macro) -> str:
            args = [a.strip() for a in found.group(1).split(",")] if found.group(1) else []
            return macro(args)

        sql = pattern.sub(substitute, sql)
    return sql


def expand(
    sql: str,
    time_range: TimeRange,
    interval_s: float,
    selection: Mapping[str, Value] | None = None,
    all_values: Mapping[str, Value] | None = None,
) -> str:
    """A panel's SQL as the plugin sends it to ClickHouse."""
    selection = selection or {}
    builtins = {
        "__from": str(_millis(time_range.start)),
        "__to": str(_millis(time_range.end)),
        "__interval": _grafana_duration(interval_s),
        "__interval_ms": str(int(interval_s * 1000)),
    }
    sql = apply_conditional_all(sql, selection)
    sql = replace_variables(sql, selection, all_values, builtins)
    return apply_macros(sql, time_range, interval_s)


# -- dashboards --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    ref_id: str
    sql: str
    format: int  # 0 time series, 1 table


@dataclass(frozen=True)
class Panel:
    id: int
    title: str
    type: str
    description: str
    targets: tuple[Target, ...]
    grid: dict[str, int]
    unit: str
    min_interval: str
    max_data_points: int
    raw: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    query: str
    multi: bool
    include_all: bool
    all_value: str | None


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[Variable, ...]
    default_time: tuple[str, str]
    path: Path
    raw: dict[str, Any] = field(repr=False, compare=False)

    def panel(self, title: str) -> Panel:
        for panel in self.panels:
            if panel.title == title:
                return panel
        raise KeyError(f"{self.uid} has no panel {title!r}")


def _panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Panels in layout order, rows' collapsed children included."""
    out: list[dict[str, Any]] = []
    for item in items:
        if item.get("type") == "row":
            out.extend(_panels(item.get("panels", [])))
        else:
            out.append(item)
    return sorted(out, key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))


def load_dashboard(path: Path) -> Dashboard:
    doc = json.loads(path.read_text())
    panels = []
    for p in _panels(doc.get("panels", [])):
        targets = tuple(
            Target(t.get("refId", "A"), t["rawSql"], int(t.get("format", 1)))
            for t in p.get("targets", [])
            if t.get("rawSql")
        )
        panels.append(
            Panel(
                id=int(p["id"]),
                title=p["title"],
                type=p["type"],
                description=p.get("description", ""),
                targets=targets,
                grid=dict(p["gridPos"]),
                unit=p.get("fieldConfig", {}).get("defaults", {}).get("unit", ""),
                min_interval=p.get("interval", ""),
                max_data_points=int(p.get("maxDataPoints") or DEFAULT_MAX_DATA_POINTS),
                raw=p,
            )
        )
    variables = tuple(
        Variable(
            name=v["name"],
            label=v.get("label") or v["name"],
            query=v["query"] if isinstance(v["query"], str) else v["query"]["rawSql"],
            multi=bool(v.get("multi")),
            include_all=bool(v.get("includeAll")),
            all_value=v.get("allValue") or None,
        )
        for v in doc.get("templating", {}).get("list", [])
        if v.get("type") == "query"
    )
    time = doc.get("time", {})
    return Dashboard(
        uid=doc["uid"],
        title=doc["title"],
        description=doc.get("description", ""),
        panels=tuple(panels),
        variables=variables,
        default_time=(time.get("from", "now-6h"), time.get("to", "now")),
        path=path,
        raw=doc,
    )


ORDER = (
    "rapport-overview",
    "rapport-relationship",
    "rapport-keep-in-touch",
    "rapport-team",
    "rapport-pipeline",
)


def load_dashboards(directory: Path = DASHBOARDS_DIR) -> list[Dashboard]:
    """Every dashboard JSON file of the directory: Rapport's in reading order, then the rest."""
    found = [load_dashboard(p) for p in sorted(directory.glob("*.json"))]
    rank = {uid: i for i, uid in enumerate(ORDER)}
    return sorted(found, key=lambda d: (rank.get(d.uid, len(ORDER)), d.path.name))


@dataclass
class Context:
    """A dashboard's time range and variable values, as Grafana would hold them."""

    time_range: TimeRange
    selection: dict[str, Value]
    options: dict[str, list[str]]

    def all_values(self, dashboard: Dashboard) -> dict[str, Value]:
        out: dict[str, Value] = {}
        for v in dashboard.variables:
            out[v.name] = v.all_value if v.all_value is not None else self.options.get(v.name, [])
        return out


def resolve_variables(
    reader: SqlReader,
    dashboard: Dashboard,
    time_range: TimeRange,
    given: Mapping[str, Value] | None = None,
) -> Context:
    """Run each variable's query in order (later ones may use earlier ones); pick the given
    value, else All when the variable offers it, else the first option (Grafana's default)."""
    given = given or {}
    context = Context(time_range, {}, {})
    for variable in dashboard.variables:
        sql = expand(
            variable.query,
            time_range,
            interval_seconds(time_range),
            context.selection,
            context.all_values(dashboard),
        )
        options = [str(row[0]) for row in reader.query(sql).rows]
        context.options[variable.name] = options
        if variable.name in given:
            context.selection[variable.name] = given[variable.name]
        elif variable.include_all:
            context.selection[variable.name] = ALL
        else:
            first = options[0] if options else ""
            context.selection[variable.name] = [first] if variable.multi and first else first
    return context


@dataclass(frozen=True)
class PanelResult:
    panel: Panel
    target: Target
    sql: str
    result: QueryResult


def panel_sql(dashboard: Dashboard, panel: Panel, target: Target, context: Context) -> str:
    interval = interval_seconds(context.time_range, panel.max_data_points, panel.min_interval)
    return expand(
        target.sql, context.time_range, interval, context.selection, context.all_values(dashboard)
    )


def run_panel(
    reader: SqlReader, dashboard: Dashboard, panel: Panel, context: Context
) -> list[PanelResult]:
    """Each target of the panel, expanded for `context` and run."""
    out = []
    for target in panel.targets:
        sql = panel_sql(dashboard, panel, target, context)
        out.append(PanelResult(panel, target, sql, reader.query(sql)))
    return out


def run_dashboard(
    reader: SqlReader,
    dashboard: Dashboard,
    time_range: TimeRange,
    given: Mapping[str, Value] | None = None,
) -> tuple[Context, list[PanelResult]]:
    context = resolve_variables(reader, dashboard, time_range, given)
    results: list[PanelResult] = []
    for panel in dashboard.panels:
        results.extend(run_panel(reader, dashboard, panel, context))
    return context, results


def data_extent(reader: SqlReader, workspace: str) -> TimeRange | None:
    """First to last interaction of a workspace (a report's default range), padded by a day."""
    result = reader.query(
        "SELECT min(occurred_at), max(occurred_at), count() FROM rapport.interactions "
        "WHERE workspace = {w:String}",
        {"w": workspace},
    )
    low, high, count = result.rows[0]
    if not count:
        return None
    start, end = (_as_utc(v) for v in (low, high))
    return TimeRange(start - timedelta(days=1), end + timedelta(days=1))


def _as_utc(value: Any) -> datetime:
    if isinstance(value, str):
        return parse_time(value)
    moment: datetime = value
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def column_kinds(result: QueryResult) -> list[str]:
    """'time', 'number', 'text' or 'other' per column, from the values (the worker's JSON
    answers carry times as ISO strings)."""
    kinds = []
    for index in range(len(result.columns)):
        values = [row[index] for row in result.rows if row[index] is not None]
        kinds.append(_kind(values))
    return kinds


def _kind(values: Sequence[Any]) -> str:
    if not values:
        return "other"
    sample = values[0]
    if isinstance(sample, bool):
        return "other"
    if isinstance(sample, (int, float)):
        return "number"
    if isinstance(sample, datetime) or _looks_like_time(sample):
        return "time"
    if hasattr(sample, "isoformat") and not isinstance(sample, str):
        return "time"  # a date
    if isinstance(sample, str):
        return "text"
    return "other"


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?([+-]\d{2}:\d{2}|Z)?$")


def _looks_like_time(value: Any) -> bool:
    return isinstance(value, str) and bool(_ISO.match(value))
