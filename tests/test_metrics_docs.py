"""docs/METRICS.md names every metric the collectors make (and no other), and every query
of the Grafana dashboard and of the docs is valid PromQL (Prometheus's own promtool)
over metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest

from hub.inventory import Inventory
from hub.metrics import HubCollector
from hub.stats import HubStats
from manager.api.metrics import ManagerCollector
from manager.supervision.states import ServiceStatus, State
from tests.conftest import ROOT
from tests.test_metrics import FakeRollouts, FakeUnit, FakeUpdater, manager_control

DOC = ROOT / "docs" / "METRICS.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "backend-ai.json"
PROCESS = {"process_cpu_seconds_total", "process_resident_memory_bytes",
           "process_virtual_memory_bytes", "process_start_time_seconds", "process_open_fds",
           "process_max_fds"}
# Grafana's variables, as a query would see them
GRAFANA_VARS = {"$manager_job": ".*", "$hub_job": ".*", "$__rate_interval": "5m",
                "$__range": "1h"}


def family_names(tmp_path) -> set[str]:
    """The metric names (with `_total` for counters) both collectors make."""
    units = {"web": FakeUnit(ServiceStatus("web", State.RUNNING))}
    manager = ManagerCollector(manager_control(tmp_path, units, FakeUpdater()))
    hub = HubCollector(inventory=Inventory(None, heartbeat_interval=1.0),  # type: ignore[arg-type]
                       rollouts=FakeRollouts(), stats=HubStats(),  # type: ignore[arg-type]
                       version="1")
    names = set()
    for collector in (manager, hub):
        for family in collector.collect():
            names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def documented() -> dict[str, str]:
    """metric -> its type, from the tables of docs/METRICS.md."""
    rows = re.findall(r"^\| `(backendai_[a-z_]+)` \| (\w+) \|", DOC.read_text(), re.MULTILINE)
    return dict(rows)


def test_every_metric_is_documented_once_with_its_type(tmp_path):
    names = family_names(tmp_path)
    docs = documented()
    assert set(docs) == names
    rows = re.findall(r"^\| `(backendai_[a-z_]+)` \|", DOC.read_text(), re.MULTILINE)
    assert len(rows) == len(set(rows))
    for name, kind in docs.items():
        assert name.endswith("_total") == (kind == "counter"), name
        assert kind in ("gauge", "counter", "histogram")
    assert all(n.startswith(("backendai_manager_", "backendai_hub_")) for n in names)


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every query of the dashboard and of the docs' examples."""
    out = []
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((f"dashboard: {panel['title']}", target["expr"]))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            out.append((f"variable {var['name']}", var["query"]["query"]))
    for row in re.findall(r"^\| [^|]+ \| `(.+)` \|$", DOC.read_text(), re.MULTILINE):
        out.append(("docs", row.replace("\\|", "|")))
    return out


def test_dashboard_is_a_grafana_dashboard_over_known_metrics(tmp_path):
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    known = family_names(tmp_path) | PROCESS
    hist = {n for n, kind in documented().items() if kind == "histogram"}
    known |= {f"{h}_{suffix}" for h in hist for suffix in ("bucket", "sum", "count")}
    titles = {p["title"] for p in dash["panels"]}
    for wanted in ("Service states", "Restarts per hour", "Health checks", "Update outcomes",
                   "Hosts by reachability", "Hosts by version", "Rollout progress",
                   "Manager call latency"):
        assert wanted in titles
    for where, expr in queries():
        for name in re.findall(r"\b((?:backendai|process)_[a-z_]+)", expr):
            assert name in known, f"{where}: unknown metric {name}"
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == "${datasource}"


def test_every_query_is_valid_promql(tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing (scripts/bootstrap.sh installs Debian's prometheus)")
    rules: list[dict[str, Any]] = []
    for i, (_where, query) in enumerate(queries()):
        if query.startswith("label_values("):
            continue  # a Grafana function, not PromQL
        expr = query
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"check:q{i}", "expr": expr})
    assert len(rules) > 40
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
