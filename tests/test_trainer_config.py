"""trainer.config and the `cxrl train/runs/demo` argument handling."""

from __future__ import annotations

import pytest

from cxrl.cli import build_parser
from cxrl.config import parse_overrides
from trainer.config import TrainConfig


def test_demo_config_loads_and_builds_a_valid_rl_config():
    cfg = TrainConfig.load("demo")
    rl = cfg.rl_config()
    assert rl.epochs >= 1 and rl.sampling.images_per_epoch % rl.sampling.batch_size == 0
    assert cfg.rewards.url == "inprocess"


def test_overrides_reach_the_preset_and_the_service_settings():
    cfg = TrainConfig.load(
        "demo", ["rl.epochs=3", "rl.sampling.num_steps=4", "rewards.url=grpc://127.0.0.1:9999"]
    )
    rl = cfg.rl_config()
    assert rl.epochs == 3 and rl.sampling.num_steps == 4
    assert cfg.rewards.url == "grpc://127.0.0.1:9999"


def test_a_command_option_sets_one_field_and_keeps_the_others_set():
    # `cxrl train --metrics-port 9102 --set metrics.host=0.0.0.0` (docker-compose.yml): both stay
    sets = parse_overrides(["metrics.host=0.0.0.0"])
    cfg = TrainConfig.load("demo", sets | {"metrics.port": 9102, "scaling.workers": 2})
    assert (cfg.metrics.host, cfg.metrics.port) == ("0.0.0.0", 9102)
    assert cfg.scaling.workers == 2 and cfg.scaling.max_failures == 2


@pytest.mark.parametrize("command", ["train", "demo"])
def test_train_and_demo_share_the_one_set_option(command):
    extra = ["--config", "demo"] if command == "train" else []
    args = build_parser().parse_args(
        [command, *extra, "--set", "rl.epochs=2", "eval.prompts=8", "--set", "a=1"]
    )
    assert args.set == ["rl.epochs=2", "eval.prompts=8", "a=1"]


def test_gateway_settings_are_used_over_grpc_and_named_unused_in_process():
    # demo-fast.yaml sets retries: 4 with url: inprocess; `cxrl demo` points the url at its gateway
    inprocess = TrainConfig.load("demo-fast")
    assert inprocess.rewards.retries == 4 and inprocess.rewards.call_retries == 0
    assert inprocess.rewards.unused() == ["timeout_s", "retries", "backoff_s"]
    served = TrainConfig.load("demo-fast", {"rewards.url": "grpc://127.0.0.1:9000"})
    assert served.rewards.call_retries == 4 and served.rewards.unused() == []
    assert TrainConfig().rewards.unused() == []  # defaults are not the user's settings: nothing to report


def test_a_tls_gateway_url_is_accepted():
    # the client takes grpcs:// as TLS (CA and client certificate from CXRL_TLS_*, tests/test_client_tls.py)
    assert (
        TrainConfig(rewards={"url": "grpcs://rewards.example:443"}).rewards.url
        == "grpcs://rewards.example:443"
    )
    with pytest.raises(ValueError, match="grpcs://host:port"):
        TrainConfig(rewards={"url": "grpcx://rewards.example:443"})


def test_bad_values_are_reported():
    with pytest.raises(ValueError, match="inprocess"):
        TrainConfig(rewards={"url": "http://x"})
    with pytest.raises(ValueError, match="images_per_epoch"):
        TrainConfig(rl={"sampling": {"images_per_epoch": 7, "batch_size": 2}})
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["epochs"])
    with pytest.raises(ValueError, match="unknown trainer config"):
        TrainConfig.load("no-such-config")
    with pytest.raises(ValueError, match="Extra inputs"):
        TrainConfig.load("demo", ["no_such_field=1"])


def test_redis_url_falls_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert TrainConfig().redis.resolved_url() == "redis://127.0.0.1:1/0"
    assert TrainConfig(redis={"url": "redis://h:2/0"}).redis.resolved_url() == "redis://h:2/0"
    monkeypatch.delenv("REDIS_URL")
    assert TrainConfig().redis.resolved_url() is None
