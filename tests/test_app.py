"""The composition root applies the process-wide settings of the config."""

from __future__ import annotations

import pytest
import torch

from aestream.app import _Null, build_app, build_trainer
from aestream.config import Config
from aestream.errors import ConfigError


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


# nothing listens on port 1: a client that connected before the check would time out instead
NO_BROKER = {"bootstrap_servers": ("127.0.0.1:1",)}


@pytest.mark.parametrize(("keys", "message"), [
    ({"alerts": {"default_sinks": ("pager",)}}, "alerts.default_sinks names 'pager', which is not a sink"),
    ({"retrain": {"schedule": "cron", "cron": "every day"}}, "retrain.cron = 'every day' is invalid"),
    ({"fleet": {"models": "kafka"}}, "needs the key that signs and checks model bundles"),
    ({"kafka": {**NO_BROKER, "security_protocol": "SSL", "ssl_cafile": "/nonexistent/ca.pem"}},
     "kafka.ssl_cafile = '/nonexistent/ca.pem' is invalid: no such file"),
])
def test_a_wrong_table_fails_at_start_before_any_client_connects(keys: dict, message: str) -> None:
    cfg = Config().replace(**{"kafka": NO_BROKER, **keys})
    with pytest.raises(ConfigError, match=message):
        build_app(cfg)
    if "fleet" not in keys:
        with pytest.raises(ConfigError, match=message):
            build_trainer(cfg.replace(fleet={"retrain_in": "trainer"}))


@pytest.mark.parametrize(("device", "override", "message"), [
    ("cuda:99", None, "config key model.device = 'cuda:99' cannot be used on this host"),
    ("cpu", "gpu", "option --device = 'gpu' cannot be used on this host .*: use \"cpu\", or \"auto\""),
])
def test_a_device_torch_cannot_use_here_fails_at_start_naming_the_setting(device: str, override: str | None,
                                                                           message: str) -> None:
    cfg = Config().replace(kafka=NO_BROKER, model={"device": device})  # no host has GPU 99: CUDA or not
    with pytest.raises(ConfigError, match=message):
        build_app(cfg, device=override, source=_Null(), sink=_Null(), models=_Null())
    if override is None:
        with pytest.raises(ConfigError, match=message):
            build_trainer(cfg.replace(fleet={"retrain_in": "trainer"}))


def test_the_confluent_client_without_its_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "confluent_kafka" else find(name, *a))
    with pytest.raises(ConfigError, match="pip install 'aestream\\[confluent\\]'"):
        build_app(Config().replace(kafka={**NO_BROKER, "client": "confluent"}))


@pytest.mark.parametrize(("client", "message"), [
    ("kafka-python", "needs the gssapi package with kafka-python: pip install gssapi"),
    ("confluent", "is not in this confluent-kafka's librdkafka .*cyrus-sasl.*: use kafka.client = \"kafka-python\""),
])
def test_kerberos_without_what_the_client_needs_for_it_fails_at_start(
        client: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find = importlib.util.find_spec  # the gssapi package is no dependency; hide it should a machine have it
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gssapi" else find(name, *a))
    if client == "confluent":
        from aestream.kafka.confluent import missing_feature

        if missing_feature("sasl_gssapi") is None:
            pytest.skip("this confluent-kafka's librdkafka has GSSAPI (PyPI's wheels have not)")
    cfg = Config().replace(kafka={**NO_BROKER, "client": client, "security_protocol": "SASL_PLAINTEXT",
                                  "sasl_mechanism": "GSSAPI"})
    with pytest.raises(ConfigError, match=message):
        build_app(cfg)


def test_the_device_option_holds_for_the_fine_tunes_and_retraining_too(tmp_path: object) -> None:
    """``aestream run --device cpu`` with model.device = "auto": the worker scored on the CPU while the fine-tunes
    and retraining it runs read model.device, and took a GPU when the host had one."""
    cfg = Config().replace(model={"device": "auto"}, retrain={"enabled": True}, paths={"state_dir": str(tmp_path)})
    app = build_app(cfg, source=_Null(), sink=_Null(), models=_Null(), device="cpu")
    assert app.worker.cfg.model.device == "cpu"
    assert app.retraining is not None and app.retraining.retrainer.cfg.model.device == "cpu"
