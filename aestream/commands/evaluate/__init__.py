"""Offline evaluation on labelled benchmarks (SKAB), through the same detection path as the worker."""

from __future__ import annotations

from aestream.commands.evaluate.skab import evaluate_folder, run_skab

__all__ = ["evaluate_folder", "run_skab"]
