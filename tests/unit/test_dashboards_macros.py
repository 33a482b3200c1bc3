"""Macro expansion as grafana-clickhouse-datasource does it, and the dashboards' own shape."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from projections.dashboards import (
    ALL,
    DASHBOARDS_DIR,
    DATASOURCE,
    TimeRange,
    apply_conditional_all,
    expand,
    interval_seconds,
    load_dashboards,
    replace_variables,
)

SPAN = TimeRange(
    datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC), datetime(2024, 3, 8, 12, 0, 0, 500000, tzinfo=UTC)
)
FROM_S, TO_S = 1709294400, 1709899200


def test_time_macros_expand_like_the_plugin() -> None:
    sql = (
        "SELECT $__timeInterval(t) AS time FROM x WHERE $__timeFilter(t) AND $__dateFilter(d) "
        "AND a > $__fromTime AND a < $__toTime AND $__timeFilter_ms(m) AND $__interval_s = 1 "
        "AND b >= $__fromTime_ms AND $__dt(d, t)"
    )
    assert expand(sql, SPAN, 3600) == (
        f"SELECT toStartOfInterval(toDateTime(t), INTERVAL 3600 second) AS time FROM x "
        f"WHERE t >= toDateTime({FROM_S}) AND t <= toDateTime({TO_S}) "
        "AND d >= toDate('2024-03-01') AND d <= toDate('2024-03-08') "
        f"AND a > toDateTime({FROM_S}) AND a < toDateTime({TO_S}) "
        f"AND m >= fromUnixTimestamp64Milli({FROM_S}000) "
        f"AND m <= fromUnixTimestamp64Milli({TO_S}500) AND 3600 = 1 "
        f"AND b >= fromUnixTimestamp64Milli({FROM_S}000) "
        "AND (d >= toDate('2024-03-01') AND d <= toDate('2024-03-08')) AND "
        f"(t >= toDateTime({FROM_S}) AND t <= toDateTime({TO_S}))"
    )


def test_macro_arguments_stop_at_the_first_parenthesis_as_in_sqlds() -> None:
    # sqlds matches `\$__name\b(?:\((.*?)\))?`: a nested call is cut at its first `)`.
    assert expand("$__timeFilter(toDate(t))", SPAN, 60) == (
        f"toDate(t >= toDateTime({FROM_S}) AND toDate(t <= toDateTime({TO_S}))"
    )
    with pytest.raises(ValueError, match="expected 1 argument"):
        expand("$__timeFilter(a, b)", SPAN, 60)


def test_conditional_all_and_variables() -> None:
    sql = (
        "SELECT 1 WHERE w = '${workspace}' AND $__conditionalAll(member IN (${member}), $member) "
        "AND $__conditionalAll(hasAny(platforms, [${platform}]), $platform)"
    )
    chosen = {"workspace": "acme", "member": ["sam", "o'neil"], "platform": ALL}
    assert apply_conditional_all(sql, chosen) == (
        "SELECT 1 WHERE w = '${workspace}' AND member IN (${member}) AND 1=1"
    )
    assert expand(sql, SPAN, 60, chosen, {"platform": ["x"]}) == (
        "SELECT 1 WHERE w = 'acme' AND member IN ('sam','o\\'neil') AND 1=1"
    )
    # All without conditionalAll: every option (Grafana's behaviour without a custom allValue).
    assert replace_variables("p IN (${platform})", {"platform": ALL}, {"platform": ["x", "y"]}) == (
        "p IN ('x','y')"
    )
    # Unknown names and backend macros are left alone; Grafana's builtins are replaced.
    assert expand("$unknown $__from $__interval", SPAN, 3600) == f"$unknown {FROM_S}000 1h"


def test_interval_follows_grafanas_ladder_and_min_interval() -> None:
    week = TimeRange(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 8, tzinfo=UTC))
    assert interval_seconds(week, 1000) == 600  # 604.8 s rounds to 10m
    assert interval_seconds(week, 200) == 3600  # 3024 s rounds to 1h
    assert interval_seconds(week, 200, "1d") == 86400
    day = TimeRange(datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC))
    assert interval_seconds(day, 100) == 900  # 864 s rounds to 15m


def test_dashboards_are_provisionable_and_use_the_rapport_datasource() -> None:
    dashboards = load_dashboards()
    assert [d.uid for d in dashboards] == [
        "rapport-overview",
        "rapport-relationship",
        "rapport-keep-in-touch",
        "rapport-team",
        "rapport-pipeline",
    ]
    macro_arg = re.compile(r"\$__(?!conditionalAll)\w+\(([^)]*)")
    for dashboard in dashboards:
        doc = json.loads(dashboard.path.read_text())
        assert dashboard.path.parent == DASHBOARDS_DIR
        assert "id" not in doc or doc["id"] is None  # provisioning assigns ids
        names = [v.name for v in dashboard.variables]
        assert names[0] == "workspace", dashboard.uid
        for variable in doc["templating"]["list"]:
            assert variable["type"] == "query" and variable["datasource"] == DATASOURCE
        ids = [p.id for p in dashboard.panels]
        assert len(ids) == len(set(ids)), dashboard.uid
        for panel in dashboard.panels:
            assert panel.raw["datasource"] == DATASOURCE
            assert panel.targets, panel.title
            for target in panel.raw["targets"]:
                assert target["datasource"] == DATASOURCE and target["editorType"] == "sql"
                assert target["format"] == (0 if panel.type == "timeseries" else 1)
            for t in panel.targets:
                for args in macro_arg.findall(t.sql):
                    assert "(" not in args, f"{panel.title}: macro arguments cannot nest"
                # Every panel filters by the workspace, or is about the pipeline as a whole.
                assert "${workspace}" in t.sql or "schema_migrations" in t.sql, panel.title


def test_grafana_provisioning_uses_the_read_only_user_and_the_dashboards_uid() -> None:
    import yaml

    deploy = DASHBOARDS_DIR.parent
    source = yaml.safe_load((deploy / "provisioning/datasources/clickhouse.yaml").read_text())
    (datasource,) = source["datasources"]
    assert {"uid": datasource["uid"], "type": datasource["type"]} == DATASOURCE
    assert datasource["jsonData"]["username"] == "grafana"
    assert datasource["jsonData"]["defaultDatabase"] == "rapport"
    provider = yaml.safe_load((deploy / "provisioning/dashboards/rapport.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    init = (deploy.parent / "clickhouse/initdb/10-grafana-user.sh").read_text()
    assert "SETTINGS readonly = 2" in init and "GRANT SELECT ON rapport.* TO grafana" in init
    compose = yaml.safe_load((deploy.parent.parent / "docker-compose.yml").read_text())
    volumes = compose["services"]["clickhouse"]["volumes"]
    assert "./deploy/clickhouse/initdb:/docker-entrypoint-initdb.d:ro" in volumes
    grafana = compose["services"]["grafana"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    assert "GRAFANA_CLICKHOUSE_PASSWORD" in grafana["environment"]
