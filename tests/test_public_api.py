"""The package's public surface, pinned: the names a program embeds the worker with. A change to them is a
deliberate API change (update this list). Internal modules are not pinned."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import aestream

PUBLIC = sorted("""
AestreamError AlertStateError App BundleError Config ConfigError
DataError InvalidReading LatentRecordError ModelBundle ModelStore Outgoing
Record ReservoirError Scored Stage StepStats TrainingError
Worker WorkerObserver __version__ build_app load_config train_bundle
""".split())
ROOT = Path(aestream.__file__).parent
FOLDERS = {"alerts", "commands", "detect", "kafka", "models", "ops", "outputs", "retrain", "stream", "training"}


def test_the_public_names_are_pinned_and_exist() -> None:
    assert sorted(aestream.__all__) == PUBLIC
    for name in aestream.__all__:
        assert hasattr(aestream, name), f"aestream.__all__ names {name}, which it does not define"


def test_every_error_is_an_aestream_error() -> None:
    for name in PUBLIC:
        obj = getattr(aestream, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, aestream.AestreamError), name


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}


def test_only_the_kafka_edge_imports_a_kafka_client() -> None:
    for path in ROOT.rglob("*.py"):
        roots = {name.split(".")[0] for name in _imports(path)}
        if path.parent.name != "kafka" or path.name == "protocols.py":
            assert not roots & {"kafka", "confluent_kafka"}, f"{path.relative_to(ROOT)} imports a Kafka client"


def test_only_the_scheduler_edge_imports_apscheduler() -> None:
    for path in ROOT.rglob("*.py"):
        if path.relative_to(ROOT) != Path("retrain/scheduler.py"):
            assert not any(n.split(".")[0] == "apscheduler" for n in _imports(path)), path.relative_to(ROOT)


def test_the_library_never_imports_the_commands() -> None:
    """The commands (cli, demo, simulate, report, evaluate, embed) use the library, never the other way round."""
    for path in ROOT.rglob("*.py"):
        if "commands" not in path.relative_to(ROOT).parts and path.name != "__main__.py":
            assert not any(n.startswith("aestream.commands") for n in _imports(path)), path.relative_to(ROOT)


def test_the_package_is_folders_by_concern() -> None:
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == FOLDERS
    loose = sorted(p.name for p in ROOT.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "app.py", "atomic.py", "config.py", "errors.py", "worker.py"]
    for folder in FOLDERS:
        importlib.import_module(f"aestream.{folder}")


def test_python_dash_m_aestream_is_the_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "aestream", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage: aestream" in proc.stdout


def test_the_codec_imports_without_torch() -> None:
    """kafka-python's fetch process decodes batched messages with the codec: the package's names are imported on
    first use, so importing the codec does not load torch (seconds and ~300 MB in every fetch process)."""
    code = "import sys, aestream.stream.codec; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert aestream.build_app is importlib.import_module("aestream.app").build_app
