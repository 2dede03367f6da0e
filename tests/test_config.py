from __future__ import annotations

import typing
from pathlib import Path

import pytest

from aestream.alerts import build_alert_stage
from aestream.app import check_config
from aestream.config import Config, RetrainConfig, load_config, parse_config
from aestream.errors import ConfigError
from aestream.retrain.scheduler import make_trigger

ROOT = Path(__file__).resolve().parents[1]


def test_repository_config_toml_parses_and_matches_the_defaults() -> None:
    cfg = load_config(ROOT / "config.toml", environ={})
    assert cfg.kafka.bootstrap_servers == ("127.0.0.1:19092",)
    assert cfg.stream.window_size > 1 and cfg.model.family in ("vanilla", "sparse", "contractive", "denoising", "conv")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"kafka": {"bootstrap_server": ["x:1"]}},
         "unknown config key kafka.bootstrap_server = ['x:1']: did you mean kafka.bootstrap_servers?"),
        ({"stream": {"window_size": "32"}},
         "config key stream.window_size = '32' is invalid: it must be a whole number"),
        ({"stream": {"stride": 100}}, "config key stream.stride = 100 is invalid: use a value from 1 to window_size"),
        ({"stream": {"stride": 4, "stride_ms": 4000}},
         "config key stream.stride = 4 is invalid: use 1 with stream.stride_ms = 4000"),
        ({"stream": {"stride_ms": -1}}, "config key stream.stride_ms = -1 is invalid: use 0 (off) or a positive"),
        ({"model": {"family": "lstm"}}, "config key model.family = 'lstm' is invalid: use \"vanilla\", \"sparse\""),
        ({"threshold": {"k": 3, "n": 2}}, "config key threshold.k = 3 is invalid: use a value from 1 to n (2)"),
        ({"kafka": {"input_topics": "readings"}},
         "config key kafka.input_topics = 'readings' is invalid: it must be a list"),
        ({"modle": {}}, "unknown config key modle = {}: did you mean model?"),
        ({"model": {"latent_size": True}}, "config key model.latent_size = True is invalid: it must be a whole number"),
        ({"streams": {"denoised_topic": "readings"}}, "config key streams.denoised_topic = 'readings' is invalid: it "
         "is one of kafka.input_topics, so the worker would read its own records back as new readings"),
        ({"streams": {"latent_topic": "readings"}}, "config key streams.latent_topic = 'readings' is invalid: it is "
         "one of kafka.input_topics"),
        ({"kafka": {"input_topics": ["plant/readings"]}}, "config key kafka.input_topics = 'plant/readings' is "
         "invalid: a Kafka topic's name uses letters, digits, '.', '_' and '-' only (at most 249): name another topic"),
        ({"kafka": {"output_topic": "anomaly events"}}, "config key kafka.output_topic = 'anomaly events' is invalid: "
         "a Kafka topic's name uses"),
        ({"kafka": {"dead_letter_topic": ".."}}, "config key kafka.dead_letter_topic = '..' is invalid: a Kafka "
         "topic's name uses"),
        ({"kafka": {"group_id": "site:north"}}, "config key kafka.group_id = 'site:north' is invalid: it names the "
         "worker's own topics (<group_id>-baselines-changelog"),
        ({"alerts": {"topic": "alerts!"}}, "config key alerts.topic = 'alerts!' is invalid: a Kafka topic's name uses"),
        ({"streams": {"latent_topic": "latent codes"}}, "config key streams.latent_topic = 'latent codes' is invalid: "
         "a Kafka topic's name uses"),
    ],
)
def test_a_wrong_key_or_value_names_the_key_the_value_and_the_fix(doc: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert message in str(err.value)


def test_bad_toml_and_missing_file_say_where(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(ConfigError, match=r"c.toml is not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"not found: pass --config"):
        load_config(tmp_path / "nope.toml")
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[kafka]\ngroup_id = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin1.toml is not UTF-8 text \(invalid continuation byte at byte 23\): "
                                          r"save it as UTF-8"):
        load_config(latin1)
    with pytest.raises(ConfigError, match=r"config file .* cannot be read \(Is a directory\): pass --config"):
        load_config(tmp_path)


def test_secrets_come_from_the_environment_and_never_show_in_repr() -> None:
    cfg = parse_config({"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"}},
                       environ={"AESTREAM_KAFKA_SASL_PASSWORD": "s3cr3t-pw"})
    assert cfg.kafka.sasl_password == "s3cr3t-pw"
    assert "s3cr3t-pw" not in repr(cfg) and "s3cr3t-pw" not in str(cfg.kafka)


def test_a_latent_topic_whose_records_could_not_hold_the_windows_is_refused_at_start() -> None:
    """The stage raised on the first scored batch instead, as the worker's step (it stopped the worker)."""
    wide = [f"c{i}" for i in range(256)]
    with pytest.raises(ConfigError, match=r"^config key streams.latent_residual_step_std = 0.05 is invalid: a latent "
                                          r"record's residual holds at most 255 channels and 65535 readings, not 256 "):
        parse_config({"stream": {"channels": wide}, "model": {"detrend_channels": []},
                      "streams": {"latent_topic": "lat", "latent_residual_step_std": 0.05}})
    with pytest.raises(ConfigError, match=r"^config key model.detrend_channels = '256 channels' is invalid: a latent "
                                          r"record holds the levels of at most 255 detrended channels"):
        parse_config({"stream": {"channels": wide}, "model": {"detrend_channels": wide},
                      "streams": {"latent_topic": "lat"}})
    assert parse_config({"stream": {"channels": wide}, "model": {"detrend_channels": []},
                         "streams": {"latent_topic": "lat"}}).stream.channels == tuple(wide)


def test_sasl_with_a_user_and_password_to_log_in_with_or_a_refusal_saying_which_is_missing() -> None:
    sasl = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"}
    with pytest.raises(ConfigError, match=r"^config key kafka.sasl_username = '' is invalid: SCRAM-SHA-512 over "
                                          r"SASL_SSL needs the user to log in as$"):
        parse_config({"kafka": sasl}, environ={"AESTREAM_KAFKA_SASL_PASSWORD": "pw"})
    with pytest.raises(ConfigError, match=r"^config key kafka.sasl_password is empty, and SCRAM-SHA-512 over SASL_SSL "
                                          r"needs it: set AESTREAM_KAFKA_SASL_PASSWORD in the environment"):
        parse_config({"kafka": {**sasl, "sasl_username": "u"}}, environ={})
    gssapi = parse_config({"kafka": {**sasl, "sasl_mechanism": "GSSAPI"}}, environ={})  # Kerberos: a ticket
    assert gssapi.kafka.sasl_username == "" and gssapi.kafka.sasl_password == ""


def test_integers_are_accepted_for_float_keys_and_replace_keeps_checks() -> None:
    cfg = parse_config({"model": {"learning_rate": 1}})
    assert cfg.model.learning_rate == 1.0
    with pytest.raises(ConfigError, match=r"stream\.window_size"):
        Config().replace(stream={"window_size": 1})


def test_the_bootstrap_servers_can_come_from_the_environment() -> None:
    cfg = load_config(None, environ={"AESTREAM_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092, k2:9092, [::1]:9093"})
    assert cfg.kafka.bootstrap_servers == ("kafka:9092", "k2:9092", "[::1]:9093")
    for bad in ("kafka.kafka.svc", "broker1:9092;broker2:9092", "kafka:99999"):  # the variable is named, not the file
        with pytest.raises(ConfigError, match=rf"^environment variable AESTREAM_KAFKA_BOOTSTRAP_SERVERS = '{bad}' is "
                                              r"invalid: list the brokers as host:port"):
            load_config(None, environ={"AESTREAM_KAFKA_BOOTSTRAP_SERVERS": bad})
    for port in ("0", "65536", "99999"):
        with pytest.raises(ConfigError, match=rf"kafka\.bootstrap_servers = \['kafka:{port}'\] is invalid"):
            parse_config({"kafka": {"bootstrap_servers": [f"kafka:{port}"]}})
    assert parse_config({"kafka": {"bootstrap_servers": ["kafka:65535"]}}).kafka.bootstrap_servers == ("kafka:65535",)


@pytest.mark.parametrize("value", [-0.05, float("nan"), float("inf"), 1e-9, 1e7, "0.05"])
def test_the_latent_residual_step_is_0_or_a_positive_number_of_training_stds(value: object) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"streams": {"latent_residual_step_std": value}})
    assert f"config key streams.latent_residual_step_std = {value!r} is invalid: " in str(err.value)
    if not isinstance(value, str):
        assert "use 0 (off) or a step of 1e-06 to 1e+06 training standard deviations of each channel" in str(err.value)
    assert parse_config({}).streams.latent_residual_step_std == 0.0  # off: AEL1/AEL2 records as before
    assert parse_config({"streams": {"latent_residual_step_std": 1}}).streams.latent_residual_step_std == 1.0


def test_a_key_left_out_takes_the_value_the_shipped_config_shows() -> None:
    """Every default of the dataclasses is what the shipped config.toml says: deleting a line from it changes
    nothing (a trained model and a retrained one read the same settings)."""
    shipped = Path(__file__).resolve().parents[1] / "config.toml"
    assert load_config(shipped, environ={}) == Config()


def test_the_shipped_config_shows_every_key_a_user_may_set_in_a_file() -> None:
    import dataclasses

    import tomllib

    def keys(obj: object, prefix: str = "") -> set[str]:
        out: set[str] = set()
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, f.name)
            nested = dataclasses.is_dataclass(value) or f.name in FAMILIES
            out |= keys(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else (
                {f"{prefix}{f.name}.{k}" for k in value} if nested else {f"{prefix}{f.name}"})
        return out

    def shown(table: dict, prefix: str = "") -> set[str]:
        return set().union(*({f"{prefix}{k}"} if not isinstance(v, dict) or k in FREE_TABLES else
                             shown(v, f"{prefix}{k}.") for k, v in table.items()))

    FAMILIES = {"vanilla", "sparse", "denoising", "contractive", "conv"}
    FREE_TABLES = {"sensors", "bands", "tags"}  # their keys are the user's (sensor globs, band and tag names)
    shipped = shown(tomllib.loads((Path(__file__).resolve().parents[1] / "config.toml").read_text()))
    # commented-out examples there; secrets from the environment only
    elsewhere = {"alerts.routes", "alerts.sinks", "fleet.model_key", "kafka.ssl_password"}
    assert keys(Config()) - elsewhere - shipped == set()


def test_detrend_channels_must_be_among_the_channels() -> None:
    with pytest.raises(ConfigError, match=r"config key model.detrend_channels = \['Temperature', 'Thermocouple'\] "
                                          r"is invalid: \['Temperature', 'Thermocouple'\] are not among "
                                          r"stream.channels \['a', 'b'\]: name some of those, or \[\] for none"):
        parse_config({"stream": {"channels": ["a", "b"]}})


def test_the_whole_config_survives_a_round_trip_through_toml() -> None:
    import tomllib

    shipped = load_config(Path(__file__).resolve().parents[1] / "config.toml", environ={})
    cfg = shipped.replace(alerts={"routes": ({"severity": "critical", "sensor": "pump-*", "sinks": ["topic"]},)},
                          threshold={"sensors": {"pump-*": 1.5, "pump-🔥-*": 2.0, "odd\x7fid": 1.2}})
    assert parse_config(tomllib.loads(cfg.to_toml()), environ={}) == cfg  # beyond the BMP, DEL: TOML's escapes


def _numeric_keys() -> list[tuple[str, str, type]]:
    """Every int and float key of every section: (section, key, type)."""
    out = []
    for section, cls in typing.get_type_hints(Config).items():
        for key, hint in typing.get_type_hints(cls).items():
            if hint in (int, float):
                out.append((section, key, hint))
    return out


NUMERIC_KEYS = _numeric_keys()


def test_the_numeric_keys_are_found() -> None:
    assert ("threshold", "factor", float) in NUMERIC_KEYS and ("stream", "window_size", int) in NUMERIC_KEYS
    assert len(NUMERIC_KEYS) > 50


@pytest.mark.parametrize(("section", "key", "kind"), NUMERIC_KEYS, ids=[f"{s}.{k}" for s, k, _ in NUMERIC_KEYS])
def test_every_numeric_key_has_its_range_checked_at_start(section: str, key: str, kind: type) -> None:
    """No key takes -1 (a count, a size, a duration, a rate, a port, a seed...), and no float key NaN or ±inf."""
    for value in ([-1] if kind is int else [-1.0, float("nan"), float("inf"), float("-inf")]):
        with pytest.raises(ConfigError) as err:
            parse_config({section: {key: value}})
        assert f"config key {section}.{key} = {value!r} is invalid: use " in str(err.value)
    assert getattr(parse_config({}), section) == getattr(Config(), section)  # and every default is in range


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"threshold": {"factor": 0}}, "config key threshold.factor = 0.0 is invalid: use a positive factor"),
        ({"threshold": {"factor": -1}}, "config key threshold.factor = -1.0 is invalid: use a positive factor"),
        ({"threshold": {"pot_initial_quantile": 1.5}},
         "config key threshold.pot_initial_quantile = 1.5 is invalid: use a quantile between 0 and 1"),
        ({"threshold": {"critical_ratio": 0.5}}, "config key threshold.critical_ratio = 0.5 is invalid: use 1 or more"),
        ({"model": {"learning_rate": 0}}, "config key model.learning_rate = 0.0 is invalid: use a positive"),
        ({"model": {"patience": 0}}, "config key model.patience = 0 is invalid: use 1 or more epochs"),
        ({"kafka": {"heartbeat_interval_ms": 10_000}},
         "config key kafka.heartbeat_interval_ms = 10000 is invalid: use less than kafka.session_timeout_ms (10000)"),
        ({"kafka": {"max_poll_interval_ms": 0}},
         "config key kafka.max_poll_interval_ms = 0 is invalid: use a positive"),
        ({"kafka": {"max_poll_interval_ms": 5_000}},
         "config key kafka.max_poll_interval_ms = 5000 is invalid: use at least kafka.session_timeout_ms (10000)"),
        ({"stream": {"max_message_bytes": 0}}, "config key stream.max_message_bytes = 0 is invalid: use a positive"),
        ({"retrain": {"n_min_windows": 30_000}},
         "config key retrain.n_min_windows = 30000 is invalid: use at most retrain.n_reservoir_windows (20000)"),
        ({"model": {"sparse": {"rho": 1.5}}},
         "config key model.sparse.rho = 1.5 is invalid: use a target activation between 0 and 1"),
        ({"model": {"conv": {"kernel_size": 0}}}, "config key model.conv.kernel_size = 0 is invalid: use a whole"),
        ({"model": {"denoising": {"mask_prob": 1.0}}},
         "config key model.denoising.mask_prob = 1.0 is invalid: use a share from 0 up to (not including) 1"),
        ({"model": {"conv": {"filter": 8}}},
         "unknown config key model.conv.filter = 8: did you mean model.conv.filters?"),
        ({"kafka": {"bootstrap_servers": []}},
         "config key kafka.bootstrap_servers = [] is invalid: list the brokers as \"host:port\" strings"),
        ({"kafka": {"bootstrap_servers": ["b1:9092", " "]}}, "config key kafka.bootstrap_servers = ['b1:9092', ' ']"),
        ({"kafka": {"bootstrap_servers": ["kafka"]}},
         "config key kafka.bootstrap_servers = ['kafka'] is invalid: list the brokers as \"host:port\" strings, e.g. "
         "[\"broker1:9092\", \"broker2:9092\"] (the port too: the readiness check and the lag metric connect to it)"),
        ({"kafka": {"input_topics": ["readings"], "dead_letter_topic": "readings"}},
         "config key kafka.dead_letter_topic = 'readings' is invalid: it is one of kafka.input_topics, so the worker "
         "would read its own messages back (a dead letter is dead-lettered again, forever): name another topic"),
        ({"kafka": {"input_topics": ["a", "b"], "output_topic": "b"}},
         "config key kafka.output_topic = 'b' is invalid: it is one of kafka.input_topics"),
        ({"kafka": {"sasl_pasword": "hunter2"}},
         "unknown config key kafka.sasl_pasword = <redacted>: did you mean kafka.sasl_password?"),
        ({"kafka": {"ssl_password": 12345678}},
         "config key kafka.ssl_password = <redacted> is invalid: it must be a quoted string"),
        ({"kafka": {"group_id": ""}},
         "config key kafka.group_id = '' is invalid: give it a name, or leave the key out for the default 'aestream'"),
        ({"kafka": {"input_topics": ["readings", ""]}},
         "config key kafka.input_topics = ['readings', ''] is invalid: name each topic"),
        ({"alerts": {"topic": ""}}, "config key alerts.topic = '' is invalid: give it a name"),
        ({"kafka": {"output_topic": "anomalies"}, "streams": {"latent_topic": "anomalies"}},
         "config key streams.latent_topic = 'anomalies' is invalid: it is also kafka.output_topic, whose consumers "
         "would get its binary records among theirs: name another topic"),
        ({"streams": {"denoised_topic": "clean", "latent_topic": "clean"}},
         "config key streams.latent_topic = 'clean' is invalid: it is also streams.denoised_topic, whose consumers "
         "would get its binary records among theirs"),
        ({"alerts": {"enabled": True, "topic": "clean"}, "streams": {"denoised_topic": "clean"}},
         "config key streams.denoised_topic = 'clean' is invalid: it is also alerts.topic, whose consumers would get "
         "its readings among theirs"),
        ({"kafka": {"input_topics": ["readings"]}, "alerts": {"dead_letter_topic": "readings"}},
         "config key alerts.dead_letter_topic = 'readings' is invalid: it is one of kafka.input_topics, so the "
         "worker would read its own dead letters back as readings: name another topic"),
        ({"stream": {"window_size": 10}, "baselines": {"n_readings": 10}},
         "config key baselines.n_readings = 10 is invalid: a sensor's threshold comes from the scores of its "
         "calibration windows, too few and too alike below 3 × stream.window_size (30 readings; on one window every "
         "later one alarmed): use at least that"),
        ({"kafka": {"poll_timeout_ms": 200}, "ops": {"liveness_timeout_s": 0.1}},
         "config key ops.liveness_timeout_s = 0.1 is invalid: use more than twice kafka.poll_timeout_ms (0.2 s;"),
        ({"retrain": {"interval_s": 1e12}},
         "config key retrain.interval_s = 1000000000000.0 is invalid: use at most 315360000 s (ten years;"),
        ({"paths": {"model_dir": ""}}, "config key paths.model_dir = '' is invalid: give it a name"),
        ({"alerts": {"enabled": True, "silent_after_s": 7200}},
         "config key alerts.silent_after_s = 7200.0 is invalid: use less than stream.sensor_ttl_s (3600), which "
         "forgets a silent sensor before it could be reported"),
        ({"model": {"vanilla": {"depth": 2}}}, "unknown config key model.vanilla.depth = 2: this table takes no keys"),
        ({"fleet": {"model_key": "s3cr3t"}},
         "config key fleet.model_key is not read from a file (a signing secret): remove it and set AESTREAM_MODEL_KEY"),
        ({"model": {"family": "sparse", "sparse": {"penalty": "none"}}},
         "config key model.sparse.dropout = 0.0 is invalid: use a share above 0 with penalty = \"none\""),
        ({"model": {"device": "cuda:x"}}, "config key model.device = 'cuda:x' is invalid: use \"auto\", \"cpu\""),
        ({"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "FOO"}},
         "config key kafka.sasl_mechanism = 'FOO' is invalid: use one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        ({"kafka": {"security_protocol": "SASL_PLAINTEXT"}}, "config key kafka.sasl_mechanism = '' is invalid"),
        ({"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"}},
         "config key kafka.sasl_mechanism = 'OAUTHBEARER' is invalid: aestream passes no OAuth settings"),
        ({"alerts": {"enabled": True, "silent_lag_ms": 3_600_000}},
         "config key alerts.silent_lag_ms = 3600000 is invalid: use less than stream.sensor_ttl_s (3600 s)"),
    ],
)
def test_out_of_range_values_name_the_key_the_value_and_the_fix(doc: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert message in str(err.value)


@pytest.mark.parametrize("doc", [
    {"stream": {"window_size": 8, "stride": 8}},
    {"stream": {"window_size": 2}},
    {"threshold": {"k": 3, "n": 3}},
    {"baselines": {"min_std_fraction": 1.0}},
    {"retrain": {"gate_recall_tolerance": 1.0}},
], ids=["stride==window_size", "window_size=2", "k==n", "min_std_fraction=1", "gate_recall_tolerance=1"])
def test_a_value_at_the_edge_of_its_range_is_accepted(doc: dict) -> None:
    cfg = parse_config(doc)
    for section, table in doc.items():
        assert {key: getattr(getattr(cfg, section), key) for key in table} == table


@pytest.mark.parametrize(
    ("alerts", "message"),
    [
        ({"bands": {"warning": float("nan")}}, "config key alerts.bands.warning = nan is invalid: use a ratio"),
        ({"sinks": {"hook": {"type": "webhook", "url": "http://h/x", "timeout_s": float("inf")}}},
         "config key alerts.sinks.hook.timeout_s = inf is invalid: use a positive number of seconds, at most 86400"),
        ({"sinks": {"hook": {"type": "webhook", "url": "http://h/x", "backoff_s": float("nan")}}},
         "config key alerts.sinks.hook.backoff_s = nan is invalid: use a positive number of seconds, at most 86400"),
        # above threading.TIMEOUT_MAX a socket's timeout and an Event's wait overflow: every delivery failed
        ({"sinks": {"hook": {"type": "webhook", "url": "http://h/x", "max_backoff_s": 1e10}}},
         "config key alerts.sinks.hook.max_backoff_s = 10000000000.0 is invalid: use a positive number of seconds"),
    ],
)
def test_the_alert_tables_are_range_checked_at_start_too(alerts: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_alert_stage(parse_config({"alerts": alerts}))  # what build_app does, also with alerts off
    assert message in str(err.value)


def test_an_empty_bootstrap_list_from_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({}, environ={"AESTREAM_KAFKA_BOOTSTRAP_SERVERS": " , "})
    assert str(err.value).startswith("environment variable AESTREAM_KAFKA_BOOTSTRAP_SERVERS = ' , ' is invalid: list")


def test_retrain_family_is_checked_with_its_sub_table_at_start() -> None:
    """Checked only when a retrain built its model, every retrain failed while the start had passed."""
    doc = {"model": {"family": "denoising", "sparse": {"penalty": "none"}}, "retrain": {"family": "sparse"}}
    with pytest.raises(ConfigError, match=r"model\.sparse\.dropout = 0\.0 .*\(retrain\.family = 'sparse' trains"):
        parse_config(doc, {})
    cfg = parse_config({**doc, "model": {"family": "denoising", "sparse": {"penalty": "none", "dropout": 0.1}}}, {})
    assert cfg.retrain.family == "sparse"


@pytest.mark.parametrize(("topic", "what"), [("anomalies", "kafka.output_topic"),
                                             ("aestream-alerts-changelog", "the alerts changelog"),
                                             ("aestream-models", "the models topic")])
def test_an_alert_topic_that_another_of_the_workers_topics_has_is_refused_at_start(topic: str, what: str) -> None:
    """An alert event keyed by sensor in a compacted changelog could take the place of that sensor's state."""
    cfg = parse_config({"alerts": {"enabled": True, "sinks": {"ops": {"type": "topic", "topic": topic}},
                                   "default_sinks": ["ops"]}})
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert str(err.value) == (f"config key alerts.sinks.ops.topic = {topic!r} is invalid: it is also {what}, whose "
                              "readers would get alert events among its records: name another topic")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"kafka": {"max_poll_records": 1_000_001}},
         "config key kafka.max_poll_records = 1000001 is invalid: use at most 1000000"),
        ({"kafka": {"max_poll_interval_ms": 3_000_000_000}},
         "config key kafka.max_poll_interval_ms = 3000000000 is invalid: use at most 86400000 ms"),
        ({"kafka": {"session_timeout_ms": 3_600_001, "max_poll_interval_ms": 3_600_001}},
         "config key kafka.session_timeout_ms = 3600001 is invalid: use at most 3600000 ms"),
        ({"kafka": {"output_topic": "x", "dead_letter_topic": "x"}},
         "config key kafka.dead_letter_topic = 'x' is invalid: it is also kafka.output_topic"),
        ({"alerts": {"dead_letter_topic": "anomalies"}},
         "config key alerts.dead_letter_topic = 'anomalies' is invalid: it is also kafka.output_topic"),
        ({"alerts": {"default_sinks": ["topic", "topic"]}},
         "config key alerts.default_sinks = ['topic', 'topic'] is invalid: name each sink once"),
        ({"ops": {"broker_check_timeout_s": 1e10}},
         "config key ops.broker_check_timeout_s = 10000000000.0 is invalid: use a positive number of s"),
        ({"retrain": {"regime_change_after_s": 0.0}},
         "config key retrain.regime_change_after_s = 0.0 is invalid: use a duration above the longest fault"),
    ],
)
def test_a_value_the_clients_or_the_loop_cannot_use_fails_at_start(doc: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(doc, {})
    assert message in str(e.value)


@pytest.mark.parametrize("cron", ["0 3 30 2 *", "0 3 31 4,6,9,11 *"])
def test_a_crontab_that_never_fires_is_a_config_error(cron: str) -> None:
    with pytest.raises(ConfigError, match=r"retrain.cron = .* names no date that comes"):
        make_trigger(RetrainConfig(schedule="cron", cron=cron))


def test_a_leap_day_crontab_still_fires() -> None:
    make_trigger(RetrainConfig(schedule="cron", cron="0 3 29 2 *"))
