"""Building the package as a user's ``pip install`` does: no setuptools warning of ours, the SPDX licence in the
metadata and the licence text in the wheel.

It builds in pip's isolated environment, which fetches ``build-system.requires`` (setuptools >= 77) from the
configured index or wheel folder, hence the integration marker."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def _source_tree(dest: Path) -> Path:
    """What an sdist holds, copied, so the build's build/ and egg-info never land in the checkout."""
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "aestream", dest / "aestream", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_the_wheel_builds_without_setuptools_warnings_and_names_its_spdx_licence(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    src = _source_tree(tmp_path / "src")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), str(src)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    warnings = [line for line in out.splitlines() if re.search(r"\w+Warning\b", line)]  # e.g. BuildBackendWarning
    assert warnings == []
    (wheel,) = tmp_path.glob("aestream-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta.splitlines()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
