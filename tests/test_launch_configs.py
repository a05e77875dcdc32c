"""accelerate's launch configurations in configs/accelerate/: each parses and names only
settings accelerate has; the CPU one launches a real two-process run.

Run: ``python -m pytest tests/test_launch_configs.py -q``
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.commands.launch import launch_command_parser

from tests.helpers import ROOT, metrics_of, only_run, read_json, run_tiny

CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


def test_there_is_a_configuration_for_each_way_to_launch():
    assert [p.stem for p in CONFIGS] == [
        "cpu_ddp", "ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp",
    ]  # fmt: skip


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_a_launch_configuration_names_only_settings_accelerate_has(path: Path):
    # Unknown top-level keys are an error of accelerate's own reader.
    config = ClusterConfig.from_yaml_file(path)
    # The FSDP and DeepSpeed sections become `accelerate launch` options (fsdp_config's
    # keys with the fsdp_ prefix, as accelerate maps them): each must be one.
    options = {action.dest for action in launch_command_parser()._actions}
    raw = yaml.safe_load(path.read_text())
    for section, prefix in (("fsdp_config", "fsdp_"), ("deepspeed_config", "")):
        for key in raw.get(section, {}):
            name = key if key.startswith(prefix) else prefix + key
            assert name in options, f"{path.name}: {section}.{key} is no accelerate option"
    # Every launch command in its comments runs a script that exists.
    for line in path.read_text().splitlines():
        if "accelerate launch" in line:
            script = line.split()[-1]
            assert (ROOT / script).is_file(), line
    assert config.num_processes >= 2


def test_the_cpu_configuration_launches_two_processes(tiny_model_path, tmp_path):
    launcher = [
        str(Path(sys.executable).parent / "accelerate"), "launch",
        "--config_file", str(ROOT / "configs" / "accelerate" / "cpu_ddp.yaml"),
    ]  # fmt: skip
    result = run_tiny("ppo", tiny_model_path, tmp_path, "--threads", "1", launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path)
    assert read_json(run / "meta.json")["status"] == "finished"
    # Both processes rolled out their own batches: twice the episodes of one process.
    config = read_json(run / "config.json")["run"]
    assert metrics_of(run)[-1]["perf/episodes"] == 2 * config["steps"] * config["batch_size"]
