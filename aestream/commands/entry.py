"""The ``aestream`` console script (and ``python -m aestream``): SIGTERM and SIGINT are taken from its first moment,
before the imports that take seconds (torch), and handed on to the command line (:func:`aestream.commands.cli.main`).
A signal that comes meanwhile stops ``run`` and ``trainer`` before their first poll and ends any other command once
its imports are done; a second one exits at once (128 + the signal)."""

from __future__ import annotations

import os
import signal

__all__ = ["main"]

_EARLY: list[int] = []  # the signals that came before the command line took them over


def _early(signum: int, _frame: object) -> None:
    if _EARLY:
        os._exit(128 + signum)
    _EARLY.append(signum)


def main() -> int:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _early)
    from aestream.commands.cli import main as cli_main

    return cli_main(early_signals=_EARLY)
