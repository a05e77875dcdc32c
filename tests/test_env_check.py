"""``rlm check-env``: it passes sound environments and catches each kind of flaw.

The flawed environments are in :mod:`tests.fixture_envs`, one flaw each; every registered
``rlm/`` environment is checked in ``tests/test_env_catalogue.py``.

Run: ``python -m pytest tests/test_env_check.py -q``
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tests.fixture_envs  # noqa: F401  (registers rlm_test/Flawed-*-v0)
from rlm.cli import main
from rlm.env import registered_text_env_ids
from rlm.env_check import check_text_env
from tests.fixture_envs import FLAWS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


@pytest.mark.parametrize(("flaw", "check"), sorted(FLAWS.items()))
def test_each_flaw_fails_its_check(flaw: str, check: str) -> None:
    report = check_text_env(f"rlm_test/Flawed-{flaw}-v0")
    failed = {result.name for result in report.results if not result.passed}
    assert check in failed, report.format()
    assert not report.passed
    assert report.format().splitlines()[-1].startswith("FAILED:")


def test_a_sound_environment_passes_every_check() -> None:
    report = check_text_env("rlm_test/Sound-v0")
    assert report.passed, report.format()
    assert [result.name for result in report.results] == [
        "gymnasium checker", "determinism", "rewards", "episode length", "bad input",
        "splits", "pickling",
    ]  # fmt: skip


def test_cli_exit_status_and_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-env", "--module", "tests.fixture_envs", "rlm_test/Flawed-range-v0"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  rewards" in out and "outside [0.0, 1.0]" in out
    assert main(["check-env", "tests.fixture_envs:rlm_test/Flawed-splits-v0"]) == 1
    assert "tasks in both train and eval" in capsys.readouterr().out


def test_cli_unknown_id_is_one_line_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-env", "rlm/Nope-v0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: unknown environment")


def test_readme_example_passes_check_env_in_one_command(tmp_path: Path) -> None:
    """Save the README's example as my_envs.py and run the command the README gives."""
    section = README.read_text().split("## Environments", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    (tmp_path / "my_envs.py").write_text(code.group(1))
    command = re.search(r"python -m rlm check-env (\S+)", section)
    assert command is not None and command.group(1) == "my_envs:rlm/Excited-v0"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "rlm", "check-env", command.group(1)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "OK: all 8 checks passed"  # the token view too


def test_readme_example_trains_with_the_command_the_readme_gives(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    """Run the README's training command from the folder holding my_envs.py (tiny model)."""
    section = README.read_text().split("## Environments", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    (tmp_path / "my_envs.py").write_text(code.group(1))
    command = re.search(r"\n(python experiments/ppo\.py --env-id my_envs:[^\n#]*)", section)
    assert command is not None
    args = command.group(1).split()[2:]
    tiny = ["--model", str(tiny_model_path), "--steps", "1", "--batch-size", "2",
            "--minibatches", "1", "--max-new-tokens", "4", "--wandb", "disabled",
            "--output-dir", str(tmp_path / "runs"), "--threads", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "ppo.py"), *args, *tiny],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (summary,) = (tmp_path / "runs").glob("*/summary.json")
    # The eval split has two prompts, fewer than --eval-prompts: both are evaluated.
    rows = [
        json.loads(line) for line in (summary.parent / "samples.jsonl").read_text().splitlines()
    ]
    assert len([r for r in rows if r["step"] == 0]) == 2


def test_list_envs_prints_every_id_with_its_reward_range(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["list-envs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ids = registered_text_env_ids()
    assert [line.split()[0] for line in lines] == ids
    for line in lines:
        assert re.search(r"reward in \[-?\d+, \d+\]", line), line
