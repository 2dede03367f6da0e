"""deploy/: the Dockerfile, Compose, Prometheus, Kubernetes and systemd files parse and agree with each other and
with config.toml (metrics port, config path, model-store path, user, command), and Compose and Kubernetes run a
fleet: workers that share no volume, one trainer, the model key from one secret (README "Scaling out")."""

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

from aestream.config import load_config, parse_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
METRICS_PORT = load_config(ROOT / "config.toml", environ={}).ops.metrics_port
FLEET_TOML = DEPLOY / "config.fleet.toml"
# what a fleet changes in config.toml (deploy/k8s/gen-configmap.sh applies it): section, key, value
FLEET = [("retrain", "enabled", True), ("fleet", "models", "kafka"), ("fleet", "retrain_in", "trainer")]
WORKER, TRAINER = "aestream", "aestream-trainer"  # the two Deployments
MODEL_KEY_ENV = "AESTREAM_MODEL_KEY"


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


def _deployment(name: str = WORKER, directory: Path = K8S / "base") -> dict[str, Any]:
    (doc,) = [d for p in sorted(directory.glob("*.yaml")) for d in _yaml_docs(p)
              if d.get("kind") == "Deployment" and d["metadata"]["name"] == name]
    return doc


def _container(name: str = WORKER) -> dict[str, Any]:
    (c,) = _deployment(name)["spec"]["template"]["spec"]["containers"]
    return c


def _secret_env(container: dict[str, Any], name: str) -> dict[str, Any]:
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if e["name"] == name]
    return dict(ref)


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
    annotations = _deployment()["spec"]["template"]["metadata"]["annotations"]
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
    assert f"./{FLEET_TOML.name}:{_config_path()}:ro" in worker["volumes"]
    assert worker["restart"] == "on-failure" and worker["stop_signal"] == "SIGTERM"
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prom["volumes"]
    prom_cfg = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = [j for j in prom_cfg["scrape_configs"] if j["job_name"] == "aestream"]
    ops = load_config(ROOT / "config.toml", environ={}).ops
    assert [(d["names"], d["port"]) for d in job["dns_sd_configs"]] == [
        (["worker"], ops.metrics_port), (["trainer"], ops.trainer_metrics_port)], "every worker and the trainer"
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
    dep = _deployment()
    assert 1 <= dep["spec"]["replicas"] <= int(dep["metadata"]["annotations"]["aestream.io/input-topic-partitions"])
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    uid = _dockerfile()["USER"][-1].split(":")[0]
    for name in (WORKER, TRAINER):
        pod = _deployment(name)["spec"]["template"]["spec"]
        assert str(pod["securityContext"]["runAsUser"]) == uid and pod["securityContext"]["runAsNonRoot"] is True


def test_config_fleet_toml_is_config_toml_with_the_fleet_settings_and_the_config_map_carries_it() -> None:
    check = subprocess.run(["bash", str(K8S / "gen-configmap.sh"), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, f"{check.stdout}{check.stderr}"  # "stale: run bash deploy/k8s/gen-configmap.sh"
    fleet_text = FLEET_TOML.read_text()
    assert _k8s("ConfigMap")["data"]["config.toml"].rstrip("\n") == fleet_text.rstrip("\n")
    expected = tomllib.loads((ROOT / "config.toml").read_text())
    for section, key, value in FLEET:
        assert expected[section][key] != value, f"config.toml already has {section}.{key} = {value!r}"
        expected[section][key] = value
    assert tomllib.loads(fleet_text) == expected  # nothing else differs
    cfg = parse_config(tomllib.loads(fleet_text), environ={MODEL_KEY_ENV: "k"})
    assert (cfg.fleet.models, cfg.fleet.retrain_in, cfg.retrain.enabled) == ("kafka", "trainer", True)
    assert cfg.alerts == load_config(ROOT / "config.toml", environ={}).alerts  # alerts as config.toml has them


def test_the_workers_share_no_volume_and_both_deployments_mount_the_config_map() -> None:
    assert not [p for p in K8S.rglob("*.yaml") for d in _yaml_docs(p) if d.get("kind") == "PersistentVolumeClaim"]
    cm = _k8s("ConfigMap")
    for name in (WORKER, TRAINER):
        volumes = {v["name"]: v for v in _deployment(name)["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in _container(name)["volumeMounts"]}
        assert volumes[mounts[str(Path(_config_path()).parent)]]["configMap"]["name"] == cm["metadata"]["name"]
        # the image's paths.* directory is scratch of the pod's own: models and state live in Kafka
        assert volumes[mounts[_var_dir()]] == {"name": mounts[_var_dir()], "emptyDir": {}}
        assert {k for v in volumes.values() for k in v if k != "name"} <= {"configMap", "emptyDir"}, name


def test_one_trainer_beside_the_workers_never_two_at_once() -> None:
    dep, trainer = _deployment(TRAINER), _container(TRAINER)
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    entrypoint = json.loads(_dockerfile()["ENTRYPOINT"][-1])
    assert [*entrypoint, *trainer["args"]] == ["aestream", "--config", _config_path(), "trainer"]
    assert trainer["image"] == _container()["image"]
    assert {e["name"]: e.get("value") for e in trainer["env"]}["AESTREAM_KAFKA_BOOTSTRAP_SERVERS"] == \
        {e["name"]: e.get("value") for e in _container()["env"]}["AESTREAM_KAFKA_BOOTSTRAP_SERVERS"]
    # its pods are neither the workers' (their Deployment, their metrics Service) nor the other way round
    trainer_labels = dep["spec"]["template"]["metadata"]["labels"]
    worker_labels = _deployment()["spec"]["template"]["metadata"]["labels"]
    for selector in (_deployment()["spec"]["selector"]["matchLabels"], _k8s("Service")["spec"]["selector"]):
        assert not selector.items() <= trainer_labels.items()
    assert not dep["spec"]["selector"]["matchLabels"].items() <= worker_labels.items()
    kust = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert {"deployment.yaml", "trainer.yaml"} <= set(kust["resources"])


def test_the_workers_and_the_trainer_take_the_model_key_from_one_secret_shipped_only_as_an_example() -> None:
    refs = [_secret_env(_container(name), MODEL_KEY_ENV) for name in (WORKER, TRAINER)]
    assert refs[0] == refs[1] and not refs[0].get("optional", False)  # kafka mode cannot start without it
    (example,) = _yaml_docs(K8S / "secret.example.yaml")
    assert example["kind"] == "Secret" and example["metadata"]["name"] == refs[0]["name"]
    assert list(example["stringData"]) == [refs[0]["key"]] and "REPLACE-ME" in example["stringData"][refs[0]["key"]]
    assert f"kubectl create secret generic {refs[0]['name']} --from-literal={refs[0]['key']}=" in \
        (K8S / "secret.example.yaml").read_text()
    for kustomization in K8S.rglob("kustomization.yaml"):  # never applied with its placeholder
        assert "secret.example.yaml" not in yaml.safe_load(kustomization.read_text()).get("resources", [])


def test_compose_scales_workers_without_a_shared_volume_beside_one_trainer() -> None:
    compose = _compose()
    worker, trainer = compose["services"]["worker"], compose["services"]["trainer"]
    assert "volumes" not in compose  # no named volume: nothing is shared on disk
    for service in (worker, trainer):
        assert service["volumes"] == [f"./{FLEET_TOML.name}:{_config_path()}:ro"]
        assert service["build"] == worker["build"] and service["image"] == worker["image"]
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert re.fullmatch(r"\$\{AESTREAM_MODEL_KEY:\?.+\}", service["environment"][MODEL_KEY_ENV])
    assert worker["command"] == ["run"] and trainer["command"] == ["trainer"]
    assert "container_name" not in worker and trainer["container_name"]  # a fixed name: compose cannot scale it
    env_example = (DEPLOY / "aestream.env.example").read_text()
    assert re.search(rf"^{MODEL_KEY_ENV}=REPLACE-ME", env_example, re.M)
    assert "deploy/.env" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_gpu_variant_asks_for_a_gpu_and_the_cuda_image_for_the_workers_and_the_trainer() -> None:
    kust = yaml.safe_load((K8S / "gpu" / "kustomization.yaml").read_text())
    assert kust["resources"] == ["../base"]
    patches = {d["metadata"]["name"]: d for p in kust["patches"] for d in _yaml_docs(K8S / "gpu" / p["path"])}
    assert set(patches) == {WORKER, TRAINER}
    for name, patch in patches.items():
        (c,) = patch["spec"]["template"]["spec"]["containers"]
        assert c["name"] == _container(name)["name"] and "cuda" in c["image"]
        assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", ["base", "gpu"])
def test_kustomize_renders_each_variant(overlay: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / overlay)], capture_output=True, text=True, check=True)
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(out.stdout) if d)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "Service"]


UNITS = {"aestream.service": "run", "aestream-trainer.service": "trainer"}


@pytest.mark.parametrize(("unit_file", "command"), UNITS.items())
def test_the_systemd_units_restart_on_failure_and_stop_with_sigterm(unit_file: str, command: str) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "systemd" / unit_file)
    svc = unit["Service"]
    assert svc["Restart"] == "on-failure" and svc["KillSignal"] == "SIGTERM"
    assert int(svc["TimeoutStopSec"]) >= 30 and svc["RestartPreventExitStatus"] == "2"
    argv = shlex.split(svc["ExecStart"])
    assert argv[0].endswith("/aestream") and argv[-1] == command
    assert argv[argv.index("--config") + 1] == _config_path()
    assert svc["EnvironmentFile"] == "-/etc/aestream/aestream.env"  # where AESTREAM_MODEL_KEY goes
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit_file", UNITS)
def test_systemd_analyze_finds_nothing_wrong_but_the_missing_install(unit_file: str) -> None:
    out = subprocess.run(["systemd-analyze", "verify", str(DEPLOY / "systemd" / unit_file)],
                         capture_output=True, text=True)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if line.strip() and "is not executable" not in line and "/opt/aestream" not in line]
    assert problems == []
