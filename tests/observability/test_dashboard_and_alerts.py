"""The operator's dashboard and alert rules (ops/): valid, loaded by compose, and only about metrics the farm
exports (issue 16, item 4)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from core.settings import FarmSettings
from migrations.runner import upgrade
from tests.farm_helpers import REPO

OPS = REPO / "ops"
DASHBOARD = OPS / "grafana" / "dashboards" / "zfarm.json"
ALERTS = OPS / "prometheus" / "alerts.yml"
HERE = Path(__file__).parent
PROMTOOL = shutil.which("promtool") or (
    str(REPO / ".venv" / "bin" / "promtool") if (REPO / ".venv/bin/promtool").exists() else None
)
NO_PROMTOOL = (
    "promtool is not installed: `make test-tools` takes it from Debian's prometheus package where apt-get exists"
)


def _exported(tmp_path: Path) -> set[str]:
    db = f"sqlite:///{tmp_path / 'z.db'}"
    upgrade(db)
    with TestClient(create_app(FarmSettings(data_dir=tmp_path, database_url=db, auth=False))) as api:
        text = api.get("/metrics").text
    # Every series a family can have, including those with no sample on an empty farm (no failures yet).
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in suffixes.get(family.type, ("",))
    }


def _expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = yaml.safe_load(ALERTS.read_text())
    return exprs + [r["expr"] for group in rules["groups"] for r in group["rules"]]


def test_dashboard_matches_the_grafana_schema_and_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    jsonschema.validate(dashboard, json.loads((HERE / "grafana_dashboard.schema.json").read_text()))
    datasource = yaml.safe_load((OPS / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    uids = {p["datasource"]["uid"] for p in dashboard["panels"]} | {
        t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]
    }
    assert uids == {datasource["uid"]}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for wanted in ("backlog", "oldest queued", "workers by state", "gpu seconds per hour", "dead", "webhook"):
        assert wanted in titles, wanted


def test_every_metric_in_the_dashboard_and_the_alerts_is_exported(tmp_path: Path) -> None:
    exported = _exported(tmp_path) | {"up"}
    used = {name for expr in _expressions() for name in re.findall(r"\b(zfarm_[a-z_]+|up)\b", expr)}
    assert used - exported == set(), f"not exported by /metrics: {sorted(used - exported)}"


def test_alerts_cover_what_an_operator_is_woken_for() -> None:
    rules = {r["alert"]: r for group in yaml.safe_load(ALERTS.read_text())["groups"] for r in group["rules"]}
    for alert in ("ZfarmInteractiveBacklogOld", "ZfarmDeadJobs", "ZfarmWorkerFailed", "ZfarmWorkersOffline",
                  "ZfarmWebhookFailures", "ZfarmNoLiveWorker", "ZfarmNoControlLeader"):  # fmt: skip
        assert alert in rules and rules[alert]["annotations"]["summary"], alert


def test_compose_loads_them_under_the_observability_profile() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"], name
    assert "./ops/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "./ops/grafana/dashboards:/var/lib/grafana/dashboards:ro" in services["grafana"]["volumes"]
    assert services["prometheus"]["secrets"] == ["zfarm_metrics_key"]
    for name, service in services.items():  # nothing else is held back by a profile
        if name not in ("prometheus", "grafana"):
            assert "profiles" not in service, name
    config = yaml.safe_load((OPS / "prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert config["scrape_configs"][0]["authorization"]["credentials_file"] == "/run/secrets/zfarm_metrics_key"


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    checked = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=OPS / "prometheus", capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_accepts_every_dashboard_query() -> None:
    # promtool parses PromQL in rule files only: each query goes through a throwaway recording rule
    queries = json.loads(DASHBOARD.read_text())["panels"]
    rules = [{"record": f"zfarm:panel_{i}", "expr": t["expr"]} for i, p in enumerate(queries) for t in p["targets"]]
    path = Path(__file__).parent / "_dashboard_queries.tmp.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    try:
        checked = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    finally:
        path.unlink()
    assert checked.returncode == 0, checked.stdout + checked.stderr
