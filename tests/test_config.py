"""ConfigModel: YAML with base chains, dotted overrides, strict keys, documented fields."""

import pytest
from pydantic import Field

from cxrl.config import ConfigModel


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
