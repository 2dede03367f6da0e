"""deploy/: the Dockerfile, Compose, Prometheus, Kubernetes and systemd files parse and agree with each other and
with config.toml (metrics port, config path, model-store path, user, command)."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from aestream.config import load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
METRICS_PORT = load_config(ROOT / "config.toml", environ={}).ops.metrics_port


def _dockerfile() -> dict[str, list[str]]:
    """Instruction → its arguments (one entry per occurrence), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instr, _, args = line.partition(" ")
            out.setdefault(instr.upper(), []).append(args.strip())
    return out


def _arg_default(df: dict[str, list[str]], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in df["ARG"] if a.startswith(f"{name}=")]
    return value.strip('"')


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _k8s(kind: str, directory: Path = K8S / "base") -> dict[str, Any]:
    (doc,) = [d for p in sorted(directory.glob("*.yaml")) for d in _yaml_docs(p) if d.get("kind") == kind]
    return doc


def _container() -> dict[str, Any]:
    (c,) = _k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def _config_path() -> str:
    entry = json.loads(_dockerfile()["ENTRYPOINT"][-1])
    return str(entry[entry.index("--config") + 1])


def _var_dir() -> str:
    """Where the image keeps the model store: its WORKDIR + the relative paths.model_dir's first part."""
    model_dir = load_config(ROOT / "config.toml", environ={}).paths.model_dir
    assert not Path(model_dir).is_absolute(), "deploy/ assumes config.toml's relative paths.model_dir"
    return f"{_dockerfile()['WORKDIR'][-1]}/{Path(model_dir).parts[0]}"


def test_the_dockerfile_is_a_cpu_python_3_11_slim_image_run_as_non_root_with_the_cuda_variant_documented() -> None:
    df = _dockerfile()
    assert df["FROM"] == ["python:3.11-slim"]
    assert _arg_default(df, "TORCH_INDEX") == "https://download.pytorch.org/whl/cpu"
    assert "--build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu" in (DEPLOY / "Dockerfile").read_text()
    assert df["USER"][-1].split(":")[0] not in ("root", "0")
    assert json.loads(df["ENTRYPOINT"][-1])[0] == "aestream"
    assert json.loads(df["CMD"][-1]) == ["run"]
    assert df["STOPSIGNAL"] == ["SIGTERM"]
    assert any('pip install ".[' in r for r in df["RUN"])


def test_the_dockerfile_installs_the_torch_that_pyproject_asks_for() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch,) = [d for d in deps if re.match(r"torch\b", d)]
    assert _arg_default(_dockerfile(), "TORCH_SPEC").replace(" ", "") == torch.replace(" ", "")


def test_the_image_copies_every_file_the_package_build_reads() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = ["pyproject.toml", project["readme"], *project.get("license-files", [])]
    copied = {w for line in _dockerfile()["COPY"] for w in shlex.split(line)[:-1]}
    kept = {line[1:] for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if line.startswith("!")}
    assert [f for f in needed if f not in copied or f not in kept] == []


def test_the_metrics_port_of_config_toml_is_the_one_every_deploy_file_uses() -> None:
    assert _dockerfile()["EXPOSE"] == [str(METRICS_PORT)]
    worker = _compose()["services"]["worker"]
    assert worker["expose"] == [str(METRICS_PORT)]
    assert f"127.0.0.1:{METRICS_PORT}/readyz" in " ".join(worker["healthcheck"]["test"])
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "aestream"]
    assert job["metrics_path"] == "/metrics" and job["dns_sd_configs"][0]["port"] == METRICS_PORT
    (port,) = _container()["ports"]
    assert port == {"name": "metrics", "containerPort": METRICS_PORT}
    annotations = _k8s("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert _k8s("Service")["spec"]["ports"][0]["port"] == METRICS_PORT


def test_compose_runs_official_kafka_in_kraft_mode_the_worker_from_the_dockerfile_and_prometheus() -> None:
    services = _compose()["services"]
    kafka, worker, prom = services["kafka"], services["worker"], services["prometheus"]
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", kafka["image"])
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    # the host listener is config.toml's default bootstrap server, so the CLI on the host reaches it
    host_port = load_config(ROOT / "config.toml", environ={}).kafka.bootstrap_servers[0].rsplit(":", 1)[1]
    assert f"{host_port}:{host_port}" in kafka["ports"] and f"HOST://localhost:{host_port}" in \
        env["KAFKA_ADVERTISED_LISTENERS"]
    internal = re.search(r"PLAINTEXT://(kafka:\d+)", env["KAFKA_ADVERTISED_LISTENERS"])
    assert internal and worker["environment"]["AESTREAM_KAFKA_BOOTSTRAP_SERVERS"] == internal.group(1)
    assert (DEPLOY / worker["build"]["context"] / worker["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert f"../config.toml:{_config_path()}:ro" in worker["volumes"]
    assert any(v.endswith(f":{_var_dir()}") for v in worker["volumes"])
    assert worker["restart"] == "on-failure" and worker["stop_signal"] == "SIGTERM"
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prom["volumes"]
    prom_cfg = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [j for j in prom_cfg["scrape_configs"] if j["job_name"] == "aestream"]
    assert job["dns_sd_configs"][0]["names"] == ["worker"]
    # the alerting rules are mounted where prometheus.yml's relative rule_files entry points, and name its job
    (rules,) = prom_cfg["rule_files"]
    assert (DEPLOY / rules).is_file() and f"./{rules}:/etc/prometheus/{rules}:ro" in prom["volumes"]
    assert 'up{job="aestream"}' in (DEPLOY / rules).read_text()


def test_every_kubernetes_file_parses_and_the_kustomizations_list_existing_files() -> None:
    for path in K8S.rglob("*.yaml"):
        assert _yaml_docs(path), path
    for kustomization in K8S.rglob("kustomization.yaml"):
        doc = yaml.safe_load(kustomization.read_text())
        for ref in doc.get("resources", []) + [p["path"] for p in doc.get("patches", [])]:
            assert (kustomization.parent / ref).exists(), (kustomization, ref)


def test_the_deployment_probes_healthz_and_readyz_on_the_metrics_port_and_requests_resources() -> None:
    c = _container()
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(c["resources"]["requests"])
    assert c["args"] == json.loads(_dockerfile()["CMD"][-1])
    env = {e["name"]: e for e in c["env"]}
    assert "value" in env["AESTREAM_KAFKA_BOOTSTRAP_SERVERS"]
    assert env["AESTREAM_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_replicas_stay_within_the_partitions_and_the_pods_run_as_the_image_user() -> None:
    dep = _k8s("Deployment")
    assert 1 <= dep["spec"]["replicas"] <= int(dep["metadata"]["annotations"]["aestream.io/input-topic-partitions"])
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    pod = dep["spec"]["template"]["spec"]
    uid = _dockerfile()["USER"][-1].split(":")[0]
    assert str(pod["securityContext"]["runAsUser"]) == uid and pod["securityContext"]["runAsNonRoot"] is True


def test_the_config_map_is_config_toml_and_the_model_store_is_a_persistent_volume() -> None:
    cm = _k8s("ConfigMap")
    assert cm["data"]["config.toml"].rstrip("\n") == (ROOT / "config.toml").read_text().rstrip("\n"), \
        "deploy/k8s/base/configmap.yaml is stale: run bash deploy/k8s/gen-configmap.sh"
    pod = _k8s("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _container()["volumeMounts"]}
    assert volumes[mounts[str(Path(_config_path()).parent)]]["configMap"]["name"] == cm["metadata"]["name"]
    pvc = _k8s("PersistentVolumeClaim")
    assert volumes[mounts[_var_dir()]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_the_gpu_variant_asks_for_a_gpu_and_the_cuda_image() -> None:
    kust = yaml.safe_load((K8S / "gpu" / "kustomization.yaml").read_text())
    assert kust["resources"] == ["../base"]
    (patch,) = [_yaml_docs(K8S / "gpu" / p["path"])[0] for p in kust["patches"]]
    assert patch["metadata"]["name"] == _k8s("Deployment")["metadata"]["name"]
    (c,) = patch["spec"]["template"]["spec"]["containers"]
    assert c["name"] == _container()["name"] and "cuda" in c["image"]
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", ["base", "gpu"])
def test_kustomize_renders_each_variant(overlay: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / overlay)], capture_output=True, text=True, check=True)
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(out.stdout) if d)
    assert kinds == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"]


def test_the_systemd_unit_restarts_on_failure_and_stops_with_sigterm() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "systemd" / "aestream.service")
    svc = unit["Service"]
    assert svc["Restart"] == "on-failure" and svc["KillSignal"] == "SIGTERM"
    assert int(svc["TimeoutStopSec"]) >= 30 and svc["RestartPreventExitStatus"] == "2"
    argv = shlex.split(svc["ExecStart"])
    assert argv[0].endswith("/aestream") and argv[-1] == "run" and argv[argv.index("--config") + 1] == _config_path()
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_finds_nothing_wrong_but_the_missing_install() -> None:
    out = subprocess.run(["systemd-analyze", "verify", str(DEPLOY / "systemd" / "aestream.service")],
                         capture_output=True, text=True)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if line.strip() and "is not executable" not in line and "/opt/aestream" not in line]
    assert problems == []
