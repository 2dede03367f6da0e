"""The composition root applies the process-wide settings of the config."""

from __future__ import annotations

import torch

from aestream.app import _Null, build_app
from aestream.config import Config


def test_the_scoring_threads_are_the_configured_torch_threads() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        cfg = Config().replace(ops={"metrics_enabled": False}, model={"torch_threads": 1})
        build_app(cfg, source=_Null(), sink=_Null(), models=_Null())
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        build_app(cfg.replace(model={"torch_threads": 0}), source=_Null(), sink=_Null(), models=_Null())
        assert torch.get_num_threads() == 2  # 0 leaves torch's own choice
    finally:
        torch.set_num_threads(before)
