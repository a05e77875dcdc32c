"""Range checks of configuration values (rlm/validation.py and PPOSettings.validate)."""

from dataclasses import dataclass

import pytest

from rlm.errors import ConfigError
from rlm.ppo_update import PPOSettings
from rlm.validation import check_ranges


@dataclass
class Example:
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    gamma: float = 1.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", 0, "--batch-size must be at least 1, got 0"),
        ("lr", -1e-3, "--lr must be a positive number, got -0.001"),
        ("lr", float("nan"), "--lr must be a positive number, got nan"),
        ("lr", float("inf"), "--lr must be a positive number, got inf"),
        ("weight_decay", -0.5, "--weight-decay must be >= 0, got -0.5"),
        ("weight_decay", float("nan"), "--weight-decay must be >= 0, got nan"),
        ("gamma", 1.5, "--gamma must be in [0, 1], got 1.5"),
    ],
)
def test_out_of_range_values_name_the_flag(field, value, message):
    config = Example(**{field: value})
    with pytest.raises(ConfigError) as error:
        check_ranges(
            config, at_least_one=["batch_size"], positive=["lr"],
            non_negative=["weight_decay"], unit_interval=["gamma"],
        )  # fmt: skip
    assert str(error.value) == message


def test_values_in_range_pass():
    check_ranges(Example(), at_least_one=["batch_size"], positive=["lr"],
                 non_negative=["weight_decay"], unit_interval=["gamma"])  # fmt: skip


def test_ppo_settings_validate():
    PPOSettings().validate(batch_size=16)
    with pytest.raises(ConfigError, match="--clip-range must be a positive number"):
        PPOSettings(clip_range=0).validate(batch_size=16)
    with pytest.raises(ConfigError, match="--lam must be in"):
        PPOSettings(lam=-0.1).validate(batch_size=16)
    with pytest.raises(ConfigError, match="divisible by --minibatches x --grad-accum"):
        PPOSettings(minibatches=3).validate(batch_size=16)
