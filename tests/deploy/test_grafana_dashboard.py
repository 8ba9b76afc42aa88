"""deploy/grafana/mcp-gateway.json graphs only what a running gateway exports on /metrics: every metric name in
every PromQL expression (panels and template variables) is checked against a real scrape."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests._stack import gateway_stack
from tests.deploy._files import DEPLOY, ROOT

DASHBOARD = DEPLOY / "grafana" / "mcp-gateway.json"
OPERATIONS = ROOT / "docs" / "operations.md"

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_KEYWORDS |= {"and", "or", "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (function names, labels, keywords and variables dropped)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and other strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery windows
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.groups()
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def _expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target, nested rows included, and every query variable."""

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} target {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert inner is not None, f"variable {variable['name']}: unexpected query {query!r}"
            yield f"variable ${variable['name']}", inner[1]


def _exported(scrape: str) -> set[str]:
    """Every series name the scrape can carry: the samples present, and each family's names by its type (a
    labelled counter nobody has incremented yet has no sample, but its `_total` is still its name)."""
    names = set()
    for family in text_string_to_metric_families(scrape):
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def test_metric_names_come_out_of_promql_without_functions_labels_or_variables() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, server) (rate(a_bucket{server=~"$server", x="by(y)"}[$__rate_interval])))'
        " / on (instance) group_left b_total + c offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


@pytest.fixture(scope="module")
async def scrape(tmp_path_factory: pytest.TempPathFactory) -> str:
    """/metrics of a real gateway (served as `mcp-gateway serve` serves it) after one refused request."""
    directory = tmp_path_factory.mktemp("stack")
    async with gateway_stack(directory, front_door=True) as stack, httpx2.AsyncClient(base_url=stack.base_url) as http:
        with anyio.fail_after(20):
            refused = await http.post("/everything/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert refused.status_code in (400, 401)
            return (await http.get("/metrics")).text


@pytest.mark.anyio
async def test_the_dashboard_uses_only_metric_names_a_running_gateway_exports(scrape: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = _exported(scrape)
    used: set[str] = set()
    for where, expr in _expressions(dashboard):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = names - exported
        assert not unknown, f"{where}: {sorted(unknown)} are not exported by the gateway's /metrics"
        used |= names
    # The dashboard shows what an operator watches first: traffic, latency, audit health, connections.
    assert {
        "mcp_gateway_requests_total",
        "mcp_gateway_request_seconds_bucket",
        "mcp_gateway_audit_healthy",
        "mcp_gateway_audit_queue_depth",
        "mcp_gateway_audit_records_lost_total",
        "mcp_gateway_connections_open",
    } <= used


@pytest.mark.anyio
async def test_every_metric_the_operations_guide_names_is_exported(scrape: str) -> None:
    named = set(re.findall(r"\bmcp_gateway_[a-z_]*[a-z]\b", OPERATIONS.read_text()))
    assert "mcp_gateway_requests_total" in named
    assert named <= _exported(scrape), f"named in docs/operations.md, not exported: {sorted(named - _exported(scrape))}"


def test_every_panel_has_a_unique_id_a_datasource_variable_and_a_place_on_the_grid() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert "datasource" in {variable["name"] for variable in dashboard["templating"]["list"]}
