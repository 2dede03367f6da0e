"""The suite's own parallel run keeps its promise: tests of one ``xdist_group`` run in one worker, one after another.

`make test` runs two pytest-xdist workers with ``--dist loadgroup``; the tests that serve the shipped config's fixed
metrics ports, or start several aestream processes, share the group "processes" so that they never run beside each
other. A pytest that pytest-xdist cannot group for (pytest 9.2 with pytest-xdist 3.8, pytest-dev/pytest-xdist#1386)
spreads them over both workers without a word, and two of them then fight over a port. This runs a small suite the
way `make test` runs this one and checks the grouping itself.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

GROUPED = '''
import time

import pytest


@pytest.mark.parametrize("i", range(4))
@pytest.mark.xdist_group("processes")
def test_grouped(i):
    time.sleep(0.2)


@pytest.mark.parametrize("i", range(8))
def test_free(i):
    time.sleep(0.2)
'''


@pytest.mark.slow
def test_the_tests_of_one_xdist_group_run_in_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider",
                           "-v", "-c", str(tmp_path / "pytest.ini"), str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    grouped = re.findall(r"\[(gw\d)\] .*PASSED .*test_grouped\[\d\](@\w+)?", proc.stdout)
    assert len(grouped) == 4, proc.stdout[-3000:]
    assert {suffix for _, suffix in grouped} == {"@processes"}, f"the group was not applied:\n{proc.stdout[-3000:]}"
    assert len({worker for worker, _ in grouped}) == 1, f"one group ran in two workers:\n{proc.stdout[-3000:]}"
