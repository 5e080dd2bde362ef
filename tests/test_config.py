"""ConfigModel: YAML with base chains, dotted overrides, strict keys, documented fields."""

import pytest
from pydantic import Field

from cxrl.config import ConfigModel, add_set_argument, parse_overrides


class Inner(ConfigModel):
    lr: float = Field(3e-4, gt=0, description="learning rate")
    steps: int = Field(10, ge=1, description="optimiser steps")


class Outer(ConfigModel):
    name: str = Field("run", description="run name")
    inner: Inner = Field(default_factory=Inner, description="inner block")


def test_base_chain_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\ninner:\n  lr: 0.1\n  steps: 5\n")
    (tmp_path / "exp.yaml").write_text("base: base.yaml\ninner:\n  steps: 7\n")
    cfg = Outer.from_yaml(tmp_path / "exp.yaml", overrides={"name": "x"})
    assert cfg.name == "x" and cfg.inner.lr == 0.1 and cfg.inner.steps == 7
    assert Outer.model_validate(__import__("yaml").safe_load(cfg.to_yaml())) == cfg


def test_unknown_key_and_bad_value_are_errors(tmp_path):
    (tmp_path / "typo.yaml").write_text("inner:\n  lrr: 0.1\n")
    with pytest.raises(ValueError, match="lrr"):
        Outer.from_yaml(tmp_path / "typo.yaml")
    (tmp_path / "neg.yaml").write_text("inner:\n  lr: -1\n")
    with pytest.raises(ValueError, match="greater than 0"):
        Outer.from_yaml(tmp_path / "neg.yaml")


def test_missing_file_and_cycles(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        Outer.from_yaml(tmp_path / "nope.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        Outer.from_yaml(tmp_path / "a.yaml")


def test_describe_lists_every_field():
    text = Inner.describe()
    assert "lr (float, default 0.0003): learning rate" in text
    assert "steps (int, default 10): optimiser steps" in text


def test_overrides_are_dotted_keys_with_yaml_values(tmp_path):
    assert parse_overrides(["a.b=3", "c=1e-3", "d=true", "e=null", "f={align: 1.0}", "g=grpc://h:1"]) == {
        "a.b": 3,
        "c": 1e-3,
        "d": True,
        "e": None,
        "f": {"align": 1.0},
        "g": "grpc://h:1",
    }
    for bad in ("epochs", "=3", "a..b=1", "a=[1"):
        with pytest.raises(ValueError, match="KEY=VALUE|not valid YAML"):
            parse_overrides([bad])
    (tmp_path / "exp.yaml").write_text("inner:\n  steps: 7\n")
    cfg = Outer.from_yaml(tmp_path / "exp.yaml", ["inner.lr=0.5", "name=x"])  # strings or a mapping
    assert (cfg.name, cfg.inner.lr, cfg.inner.steps) == ("x", 0.5, 7)
    assert Outer.from_overrides(["inner.steps=2"]).inner.steps == 2


def test_named_configs_and_the_set_option(tmp_path):
    class Named(Outer):
        config_dir = tmp_path
        config_kind = "thing"

    (tmp_path / "small.yaml").write_text("name: small\n")
    assert Named.names() == ["small"] and Named.load("small", {"inner.steps": 3}).inner.steps == 3
    assert Named.load(tmp_path / "small.yaml").name == "small"
    with pytest.raises(ValueError, match="unknown thing 'big'; choose one of \\['small'\\]"):
        Named.load("big")
    parser = __import__("argparse").ArgumentParser()
    add_set_argument(parser)
    assert parser.parse_args(["--set", "a=1", "b=2", "--set", "c=3"]).set == ["a=1", "b=2", "c=3"]
