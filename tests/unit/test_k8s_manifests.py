"""deploy/k8s agrees with the code: settings, topics, routes, images, files (docs/operations.md).

What a cluster would only reveal at run time, checked offline: an RAPPORT_* name that is no
setting (pydantic-settings ignores unknown names silently), a topic whose partitions or
retention differ from streams/topics.py (the worker refuses to start), a probe on a route the
app does not serve (pods never become ready), more workers than partitions (idle pods), an
image or ConfigMap name that does not match, a manifest the kustomization forgets.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from projections import migrations
from rapport.settings import Settings
from rapport.workspaces import WorkspaceRegistry
from streams.deadletters import ledger_topic
from streams.topics import topic_specs

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
GRAFANA = ROOT / "deploy" / "grafana"
PREFIX = "RAPPORT_"

Doc = dict[str, Any]


def _load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


KUSTOMIZATION: Doc = yaml.safe_load((K8S / "kustomization.yaml").read_text())
DOCS: list[tuple[Path, Doc]] = [(p, d) for p in _manifest_files() for d in _load(p)]
APPLIED: list[Doc] = [d for p, d in DOCS if p.parent == K8S]  # the kustomization's resources
JOBS: list[Doc] = [d for p, d in DOCS if p.parent == K8S / "jobs"]


def _one(kind: str, name: str, docs: list[Doc] = APPLIED) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"].get("name") == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _of_kind(kind: str, docs: list[Doc] = APPLIED) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def _pod_spec(doc: Doc) -> Doc:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return dict(spec["template"]["spec"])


def _workloads() -> list[Doc]:
    return [d for d in APPLIED + JOBS if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def _containers() -> Iterator[tuple[Doc, Doc]]:
    for doc in _workloads():
        spec = _pod_spec(doc)
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield doc, container


def _rapport_containers() -> list[tuple[Doc, Doc]]:
    """Containers that run the `rapport` CLI (the image the Dockerfile builds)."""
    return [(d, c) for d, c in _containers() if c.get("command", [""])[0] == "rapport"]


CONFIG: dict[str, str] = {
    str(k): str(v) for k, v in _one("ConfigMap", "rapport-config")["data"].items()
}


def _field(env_name: str) -> str:
    return env_name[len(PREFIX) :].lower()


def _settings() -> Settings:
    """The Settings a pod gets from rapport-config, validated as at start (this process's own
    RAPPORT_* environment left out: model_validate reads no environment)."""
    return Settings.model_validate({_field(k): v for k, v in CONFIG.items()})


SETTINGS = _settings()


def _container(name: str) -> Doc:
    found = [c for d, c in _containers() if d["kind"] != "Job" and c["name"] == name]
    assert len(found) == 1, name
    return found[0]


def _env(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


# --- the kustomization ----------------------------------------------------------------------


def test_every_yaml_file_parses_into_named_kubernetes_objects() -> None:
    assert DOCS
    for path, doc in DOCS:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
        assert doc["metadata"].get("name") or doc["metadata"].get("generateName"), path


def test_the_kustomization_lists_every_manifest_and_only_existing_files() -> None:
    top = {p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert set(KUSTOMIZATION["resources"]) == top
    for generator in KUSTOMIZATION.get("configMapGenerator", []):
        for entry in generator.get("files", []):
            source = entry.split("=", 1)[-1]
            assert (K8S / source).is_file(), f"{generator['name']}: {source} missing"
    assert KUSTOMIZATION["namespace"] == _one("Namespace", "rapport")["metadata"]["name"]


def test_on_demand_jobs_stay_out_of_the_kustomization_and_name_the_namespace() -> None:
    assert JOBS, "deploy/k8s/jobs/ holds the migrate/replay/activate Jobs"
    assert not [r for r in KUSTOMIZATION["resources"] if r.startswith("jobs")]
    # kustomize renames hashed ConfigMaps in what it builds; the Jobs are not built by it
    stable = {d["metadata"]["name"] for d in _of_kind("ConfigMap")} | {
        g["name"]
        for g in KUSTOMIZATION["configMapGenerator"]
        if g.get("options", {}).get("disableNameSuffixHash")
    }
    for job in JOBS:
        assert job["kind"] == "Job"
        assert job["metadata"]["namespace"] == KUSTOMIZATION["namespace"]
        spec = _pod_spec(job)
        names = [v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v]
        names += [
            s["configMapRef"]["name"]
            for c in spec["containers"]
            for s in c.get("envFrom", [])
            if "configMapRef" in s
        ]
        assert set(names) <= stable, job["metadata"]


def test_every_dashboard_and_provisioning_file_is_generated_into_a_configmap() -> None:
    generated = {
        (K8S / entry.split("=", 1)[-1]).resolve()
        for generator in KUSTOMIZATION["configMapGenerator"]
        for entry in generator.get("files", [])
    }
    wanted = set(GRAFANA.rglob("*.json")) | set(GRAFANA.rglob("*.yaml"))
    assert {p.resolve() for p in wanted} <= generated


def test_configmaps_and_secrets_referenced_by_pods_exist() -> None:
    configmaps = {d["metadata"]["name"] for d in _of_kind("ConfigMap")} | {
        g["name"] for g in KUSTOMIZATION["configMapGenerator"]
    }
    secrets: dict[str, set[str]] = {
        d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
        for d in _of_kind("Secret")
    }
    for doc, container in _containers():
        where = f"{doc['metadata']} {container['name']}"
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in configmaps, where
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets, where
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets.get(ref["name"], set()), f"{where} {env['name']}"
        for volume in _pod_spec(doc).get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, where


def test_kustomize_builds_when_kubectl_is_installed(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    build = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(K8S)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    built = [d for d in yaml.safe_load_all(build.stdout) if d]
    assert all(d["metadata"].get("namespace", "rapport") == "rapport" for d in built)
    dashboards = [
        d
        for d in built
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("grafana-dashboards")
    ]
    assert len(dashboards) == 1
    assert set(dashboards[0]["data"]) == {p.name for p in (GRAFANA / "dashboards").glob("*.json")}
    images = {
        c["image"]
        for d in built
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        if c.get("command", [""])[0] == "rapport"
    }
    assert len(images) == 1, images


# --- settings -------------------------------------------------------------------------------


def _rapport_env_names() -> set[str]:
    names = {k for k in CONFIG if k.startswith(PREFIX)}
    for _, container in _containers():
        names |= {e["name"] for e in container.get("env", []) if e["name"].startswith(PREFIX)}
    return names


def test_every_rapport_env_name_is_a_settings_field() -> None:
    fields = set(Settings.model_fields)
    unknown = sorted(n for n in _rapport_env_names() if _field(n) not in fields)
    assert not unknown, f"not fields of rapport/settings.py (silently ignored): {unknown}"
    assert all(k.startswith(PREFIX) for k in CONFIG), "rapport-config holds RAPPORT_* only"


def test_the_configmap_values_are_valid_settings() -> None:
    assert SETTINGS.partitions == int(CONFIG["RAPPORT_PARTITIONS"])
    assert SETTINGS.worker_admin_sql is False
    assert SETTINGS.projection_version >= 1, "pods have no home to remember a swap in"
    assert SETTINGS.worker_store == "rocksdb://", "tables persist next to the worker"
    assert SETTINGS.home == Path("/data"), "the worker's emptyDir holds home (its RocksDB files)"


def test_every_rapport_pod_gets_the_settings_and_a_server_clickhouse() -> None:
    for doc, container in _rapport_containers():
        refs = [
            s["configMapRef"]["name"] for s in container.get("envFrom", []) if "configMapRef" in s
        ]
        assert "rapport-config" in refs, doc["metadata"]
    for doc, container in _rapport_containers():
        if container["command"][1:2] == ["ingest"]:
            continue  # the ingest never talks to ClickHouse
        url = _env(container)["RAPPORT_CLICKHOUSE_URL"]["value"]
        parsed = urlsplit(url)
        assert parsed.scheme == "http", f"{doc['metadata']}: not the embedded chdb in a cluster"
        assert parsed.hostname == _clickhouse_service()
        assert parsed.port == 8123
        assert parsed.path.strip("/") == SETTINGS.clickhouse_database
        # $(CLICKHOUSE_PASSWORD) is only expanded when defined earlier in the list
        names = [e["name"] for e in container["env"]]
        assert names.index("CLICKHOUSE_PASSWORD") < names.index("RAPPORT_CLICKHOUSE_URL")


def test_the_worker_advertises_its_pod_address() -> None:
    env = _env(_container("worker"))
    assert env["RAPPORT_WORKER_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "RAPPORT_WORKER_HOST" not in CONFIG  # 0.0.0.0 would break routing between workers


def test_the_example_workspace_file_loads_with_the_secret_template(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = _one("Secret", "rapport-webhook-secrets")["stringData"]
    data = tomllib.loads((K8S / "workspaces.toml").read_text())
    refs = [
        value[len("env:") :]
        for workspace in data["workspaces"].values()
        for values in workspace.get("secrets", {}).values()
        for value in ([values] if isinstance(values, str) else values)
        if value.startswith("env:")
    ]
    assert refs, "the example shows secrets as env:NAME references, never literals"
    for name in refs:
        assert name in secret, f"workspaces.toml needs {name}, the Secret lacks it"
    for name, value in secret.items():
        monkeypatch.setenv(name, value)
    registry = WorkspaceRegistry.from_mapping(data)
    assert list(registry.workspaces)
    assert Path(CONFIG["RAPPORT_WORKSPACES"]).name == "workspaces.toml"


# --- Kafka ----------------------------------------------------------------------------------


def _kafka() -> Doc:
    [kafka] = _of_kind("Kafka")
    return kafka


def test_kafka_topics_are_the_topics_the_code_creates() -> None:
    expected = {s.name: s for s in topic_specs(SETTINGS)}
    ledger = ledger_topic(SETTINGS)
    topics = {d["spec"].get("topicName", d["metadata"]["name"]): d for d in _of_kind("KafkaTopic")}
    assert set(topics) == set(expected) | {ledger}
    assert set(expected) == {
        getattr(Settings(), f) for f in Settings.model_fields if f.startswith("topic_")
    } | {"rapport.replay"}, "topic names are the settings defaults"
    cluster = _kafka()["metadata"]["name"]
    for name, topic in topics.items():
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster, name
        assert topic["spec"]["replicas"] == SETTINGS.replication_factor, name
        config = {k: str(v) for k, v in topic["spec"].get("config", {}).items()}
        if name == ledger:
            assert topic["spec"]["partitions"] == 1
            assert config == {"cleanup.policy": "compact", "retention.ms": "-1"}
            continue
        assert topic["spec"]["partitions"] == SETTINGS.partitions, name
        assert config == expected[name].config, name


def test_the_event_log_is_kept_forever_and_not_compacted() -> None:
    [events] = [
        d for d in _of_kind("KafkaTopic") if d["spec"]["topicName"] == SETTINGS.topic_events
    ]
    config = events["spec"]["config"]
    assert str(config["retention.ms"]) == "-1"
    assert config.get("cleanup.policy", "delete") == "delete"
    assert "retention.bytes" not in config


def test_kafka_survives_one_broker_with_acks_all() -> None:
    brokers = sum(
        p["spec"]["replicas"] for p in _of_kind("KafkaNodePool") if "broker" in p["spec"]["roles"]
    )
    config = _kafka()["spec"]["kafka"]["config"]
    assert SETTINGS.replication_factor <= brokers
    assert 1 < int(config["min.insync.replicas"]) < SETTINGS.replication_factor
    assert config["auto.create.topics.enable"] is False
    [listener] = [
        x
        for x in _kafka()["spec"]["kafka"]["listeners"]
        if x["port"] == SETTINGS.kafka_host_port[1]
    ]
    assert listener["tls"] is False, "Rapport's clients have no TLS/SASL settings"
    assert SETTINGS.kafka_host_port[0] == f"{_kafka()['metadata']['name']}-kafka-bootstrap"
    big = max(int(s.config.get("max.message.bytes", 0)) for s in topic_specs(SETTINGS))
    assert int(config["message.max.bytes"]) >= big


# --- workloads ------------------------------------------------------------------------------


def test_worker_replicas_fit_the_partitions_and_the_standbys() -> None:
    replicas = _one("Deployment", "rapport-worker")["spec"]["replicas"]
    assert 1 <= replicas <= SETTINGS.partitions, "a worker beyond the partitions has no work"
    assert SETTINGS.worker_standby_replicas < replicas, "a standby lives on another worker"
    strategy = _one("Deployment", "rapport-worker")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxSurge"] == 0


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def test_the_worker_memory_limit_holds_what_its_settings_let_it_take() -> None:
    """docs/operations.md's sizing: the decoded-state budget, RocksDB's bounds for every table
    partition the worker has open (its share and the standby copies), and the process (about
    650-700 MB under load in `make load`)."""
    replicas = _one("Deployment", "rapport-worker")["spec"]["replicas"]
    owned = -(-SETTINGS.partitions // replicas)  # the largest share
    open_partitions = owned * (1 + SETTINGS.worker_standby_replicas)
    per_table = 2 * SETTINGS.worker_rocksdb_write_buffer_mb + SETTINGS.worker_rocksdb_block_cache_mb
    needed_mb = SETTINGS.worker_live_states_mb + open_partitions * 2 * per_table + 700
    limit = _container("worker")["resources"]["limits"]["memory"]
    assert _bytes(limit) >= needed_mb * 2**20, (limit, needed_mb)


def _worker_routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    import streams.replay.sink

    # The only part of create_app that talks to Kafka (it would wait for a broker).
    monkeypatch.setattr(streams.replay.sink, "declare_changelogs", lambda app, settings: None)
    from streams.app import create_app

    app = create_app(SETTINGS.model_copy(update={"home": tmp_path}), WorkspaceRegistry())
    return set(app.web.views)


def _ingest_routes() -> set[str]:
    from streams.ingest import create_ingest_app

    app = create_ingest_app(SETTINGS, WorkspaceRegistry())
    return {route.resource.canonical for route in app.router.routes() if route.resource}


def _probes(container: Doc) -> list[Doc]:
    return [
        container[p]["httpGet"]
        for p in ("startupProbe", "livenessProbe", "readinessProbe")
        if p in container
    ]


def _port(container: Doc, ref: int | str) -> int:
    if isinstance(ref, int):
        return ref
    [port] = [p["containerPort"] for p in container["ports"] if p["name"] == ref]
    return int(port)


def test_probes_hit_routes_the_apps_serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = {
        "worker": (_worker_routes(tmp_path, monkeypatch), SETTINGS.worker_port),
        "ingest": (_ingest_routes(), SETTINGS.ingest_port),
    }
    for name, (routes, port) in served.items():
        container = _container(name)
        probes = _probes(container)
        assert {"livenessProbe", "readinessProbe"} <= container.keys(), name
        for probe in probes:
            assert probe["path"] in routes, f"{name}: {probe['path']} not in {sorted(routes)}"
            assert _port(container, probe["port"]) == port, name
    assert _container("ingest")["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "/metrics" in served["ingest"][0]


def test_services_target_the_ports_the_apps_listen_on() -> None:
    for service, container, port in (
        ("rapport-worker", "worker", SETTINGS.worker_port),
        ("rapport-ingest", "ingest", SETTINGS.ingest_port),
    ):
        svc = _one("Service", service)
        deployment = _one("Deployment", service)
        assert (
            svc["spec"]["selector"].items()
            <= deployment["spec"]["template"]["metadata"]["labels"].items()
        )
        for p in svc["spec"]["ports"]:
            assert _port(_container(container), p["targetPort"]) == port


def test_the_ingest_scales_with_an_hpa_that_owns_its_replicas() -> None:
    hpa = _one("HorizontalPodAutoscaler", "rapport-ingest")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "rapport-ingest")
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in _one("Deployment", "rapport-ingest")["spec"]
    assert _container("ingest")["resources"]["requests"]["cpu"], "utilization needs a request"


def test_one_rapport_image_for_every_service_and_job() -> None:
    images = {c["image"] for _, c in _rapport_containers()}
    assert len(images) == 1, images
    [image] = images
    name, _, tag = image.partition(":")
    [entry] = [i for i in KUSTOMIZATION["images"] if i["name"] == name]
    assert entry.get("newTag", tag) == tag, "jobs/ are not kustomized: keep their tag in step"
    commands = {tuple(c["command"][:2]) for _, c in _rapport_containers()}
    assert {("rapport", "worker"), ("rapport", "ingest")} <= commands


def test_rapport_pods_carry_the_label_kafka_admits() -> None:
    [listener] = _kafka()["spec"]["kafka"]["listeners"]
    [peer] = listener["networkPolicyPeers"]
    wanted = peer["podSelector"]["matchLabels"].items()
    for doc, _ in _rapport_containers():
        assert wanted <= doc["spec"]["template"]["metadata"]["labels"].items(), doc["metadata"]


# --- ClickHouse and Grafana -----------------------------------------------------------------


def _chi() -> Doc:
    [chi] = _of_kind("ClickHouseInstallation")
    return chi


def _clickhouse_service() -> str:
    chi = _chi()
    wanted = chi["spec"]["defaults"]["templates"]["serviceTemplate"]
    [template] = [t for t in chi["spec"]["templates"]["serviceTemplates"] if t["name"] == wanted]
    return str(template["generateName"])


def _migration_sql() -> str:
    return "\n".join(
        sql for m in migrations.MIGRATIONS for sql in m.statements(SETTINGS.clickhouse_database)
    )


def test_clickhouse_user_passwords_come_from_the_secret_template() -> None:
    keys = set(_one("Secret", "rapport-clickhouse")["stringData"])
    users = _chi()["spec"]["configuration"]["users"]
    refs = [v["valueFrom"]["secretKeyRef"] for v in users.values() if isinstance(v, dict)]
    assert {r["name"] for r in refs} == {"rapport-clickhouse"}
    assert {r["key"] for r in refs} == keys
    worker = _env(_container("worker"))
    assert (
        worker["CLICKHOUSE_PASSWORD"]["valueFrom"]["secretKeyRef"]
        == (users["rapport/password"]["valueFrom"]["secretKeyRef"])
    )
    assert urlsplit(worker["RAPPORT_CLICKHOUSE_URL"]["value"]).username == "rapport"


def test_clickhouse_layout_matches_what_the_migrations_create() -> None:
    [cluster] = _chi()["spec"]["configuration"]["clusters"]
    layout = cluster["layout"]
    servers = layout.get("shardsCount", 1) * layout.get("replicasCount", 1)
    replicated = re.search(r"ENGINE\s*=\s*Replicated", _migration_sql()) is not None
    assert servers == 1 or replicated, (
        "the migrations make plain MergeTree tables: more than one server would split the data"
    )


def test_grafana_datasource_reaches_the_clickhouse_service_as_the_readonly_user() -> None:
    datasource = yaml.safe_load((GRAFANA / "provisioning/datasources/clickhouse.yaml").read_text())
    [source] = datasource["datasources"]
    assert source["jsonData"]["host"] == _clickhouse_service()
    user = source["jsonData"]["username"]
    users = _chi()["spec"]["configuration"]["users"]
    assert f"{user}/password" in users
    profile = users[f"{user}/profile"]
    assert _chi()["spec"]["configuration"]["profiles"][f"{profile}/readonly"] == 2
    grafana = _container("grafana")
    assert "GRAFANA_CLICKHOUSE_PASSWORD" in _env(grafana)
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/rapport.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    mounts = {m["mountPath"]: m["name"] for m in grafana["volumeMounts"]}
    assert mounts[path] == "dashboards"
