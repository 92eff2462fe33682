"""Typed parameters from strings (command line) and TOML values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from nextclick.config import build_config, parse_overrides, read_toml
from nextclick.errors import ConfigError


@dataclass(frozen=True)
class Example:
    layers: tuple[int, ...] = (100,)
    rate: float = 0.1
    flag: bool = False
    loss: Literal["cross-entropy", "bpr-max"] = "cross-entropy"
    embedding: int | Literal["layersize"] = 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("200/200", (200, 200)), ("[200,200]", (200, 200)), ("64", (64,)), ("[32]", (32,))],
)
def test_lists_from_the_command_line(raw, expected):
    assert build_config(Example, parse_overrides([f"layers={raw}"])).layers == expected


def test_typed_values_and_layer_order(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text('layers = [224]\nrate = 1\nflag = true\nloss = "bpr-max"\n')
    config = build_config(Example, read_toml(toml), {"rate": "0.05", "embedding": "layersize"})
    assert config == Example((224,), 0.05, True, "bpr-max", "layersize")
    assert build_config(Example, {"embedding": "32"}).embedding == 32


def test_params_table_in_toml(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text("[params]\nrate = 0.5\n")
    assert build_config(Example, read_toml(toml)).rate == 0.5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"layers": "a/b"}, "parameter 'layers': 'a' is not an integer"),
        ({"layers": "[1,"}, "parameter 'layers': '[1,' is not a list"),
        ({"rate": "fast"}, "parameter 'rate': 'fast' is not a number"),
        ({"rate": True}, "parameter 'rate': True is not a number"),
        ({"flag": "maybe"}, "parameter 'flag': 'maybe' is not a boolean"),
        ({"loss": "top2"}, "parameter 'loss': 'top2' is not one of 'cross-entropy', 'bpr-max'"),
        ({"embedding": "wide"}, "parameter 'embedding': 'wide' is not one of 'layersize'"),
        ({"speed": "1"}, "unknown parameter 'speed'; known parameters: embedding, flag, layers"),
    ],
)
def test_bad_values_name_the_parameter(override, message):
    with pytest.raises(ConfigError) as info:
        build_config(Example, override)
    assert message in str(info.value)


def test_missing_toml_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        read_toml(tmp_path / "none.toml")
