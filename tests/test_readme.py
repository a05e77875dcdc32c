"""The README's environment example runs as written.

python -m pytest tests/test_readme.py -q
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import gymnasium as gym
from gymnasium.utils.env_checker import check_env

from rlm.env import TextVectorEnv

README = Path(__file__).resolve().parents[1] / "README.md"


def test_environment_example_registers_checks_and_vectorises(tmp_path, monkeypatch):
    section = README.read_text().split("## Environments", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code, "the Environments section has no python example"
    (tmp_path / "my_envs.py").write_text(code.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_envs", None)
    import my_envs  # noqa: F401  (registers rlm/Excited-v0)

    try:
        env = gym.make("rlm/Excited-v0")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check_env(env.unwrapped)
        env.reset(seed=0)
        assert env.step("Wonderful!!")[1] == 2 / 3
        vector = gym.make_vec("rlm/Excited-v0", num_envs=3)
        assert isinstance(vector, TextVectorEnv)
        vector.reset(seed=0)
        assert list(vector.step(["!", "!!", "!!!!"])[1]) == [1 / 3, 2 / 3, 1.0]
        assert gym.make("rlm/Excited-v0", split="eval").unwrapped.tasks[0]["topic"] == "maps"
    finally:
        gym.registry.pop("rlm/Excited-v0", None)
        sys.modules.pop("my_envs", None)
