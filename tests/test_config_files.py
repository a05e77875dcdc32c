"""Config files and the shared flags: --config, a run's config.json, --resume's rules.

python -m pytest tests/test_config_files.py -q
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from rlm.config_files import apply_settings, read_settings_file
from rlm.errors import ConfigError
from rlm.runner import run_config
from rlm.scripting import parse_config
from tests.helpers import EXPERIMENTS, ROOT, load_experiment

ppo = load_experiment("ppo")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_yaml_file_sets_fields_flat_or_in_their_sections(tmp_path):
    config = write(tmp_path / "x.yaml", "seed: 3\nlr: 3e-4\nwandb: offline\nppo:\n  epochs: 4\n")
    parsed = parse_config(ppo.Config, ["--config", str(config)], algorithm="ppo")
    assert parsed.run.seed == 3 and parsed.run.lr == 3e-4  # YAML reads 3e-4 as text
    assert parsed.run.tracking.wandb == "offline" and parsed.ppo.epochs == 4
    assert parsed.run.config == config
    nested = write(tmp_path / "y.yaml", "run:\n  tracking:\n    output_dir: elsewhere\n")
    assert parse_config(ppo.Config, ["--config", str(nested)]).run.tracking.output_dir == Path(
        "elsewhere"
    )


def test_flags_override_the_file_wherever_they_stand(tmp_path):
    config = write(tmp_path / "x.yaml", "seed: 3\nsteps: 7\n")
    for argv in (["--config", str(config), "--seed", "5"], ["--seed", "5", f"--config={config}"]):
        parsed = parse_config(ppo.Config, argv, algorithm="ppo")
        assert (parsed.run.seed, parsed.run.steps) == (5, 7)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lrr: 0.1\n", "unknown setting 'lrr' (did you mean 'lr'?)"),
        ("ppo:\n  epoch: 2\n", "unknown setting 'epoch' (did you mean 'epochs'?)"),
        ("steps: many\n", "steps must be an integer, got 'many'"),
        ("steps: 2.5\n", "steps must be an integer"),
        ("lora: 1\n", "lora must be true or false"),
        ("wandb: sometimes\n", "wandb must be one of auto, online, offline, disabled"),
        ("lr: fast\n", "lr must be a number"),
        ("algorithm: grpo\n", "is a config for 'grpo'; run it with experiments/grpo.py"),
        ("stop_after: 3\n", "stop_after belongs on the command line (--stop-after)"),
        ("- 1\n- 2\n", "must hold a mapping"),
        ("seed: [1\n", "is not valid YAML"),
    ],
)
def test_bad_files_are_one_line_errors_that_name_the_key(tmp_path, text, message):
    config = write(tmp_path / "x.yaml", text)
    with pytest.raises(ConfigError) as error:
        parse_config(ppo.Config, ["--config", str(config)], algorithm="ppo")
    assert message in str(error.value) and "\n" not in str(error.value).strip()
    assert str(config) in str(error.value)


def test_a_runs_config_json_does_not_carry_its_folder_name(tmp_path):
    config = parse_config(ppo.Config, ["--run-name", "mine", "--seed", "3"])
    recorded = run_config(ppo.PPO(config.ppo), config)
    assert recorded["run"]["tracking"]["run_name"] is None  # a new run gets a new folder
    path = write(tmp_path / "config.json", json.dumps(recorded))
    assert parse_config(ppo.Config, ["--config", str(path)]).run.tracking.run_name is None


def test_null_invocation_fields_and_a_recorded_config_path_are_accepted(tmp_path):
    values = {"resume": None, "stop_after": None, "config": "configs/demo.yaml", "seed": 2}
    parsed = apply_settings(ppo.Config(), values, source="x.json", algorithm="ppo")
    assert parsed.run.seed == 2 and parsed.run.config is None and parsed.run.resume is None


@pytest.mark.parametrize("algorithm", EXPERIMENTS)
def test_a_runs_config_json_starts_the_same_run_again(tmp_path, algorithm):
    experiment = load_experiment(algorithm)
    argv = ["--seed", "4", "--lr", "2e-4", "--wandb", "disabled", "--stop-after", "2"]
    config = parse_config(experiment.Config, argv, algorithm=algorithm)
    algo = {"ppo": "PPO", "grpo": "GRPO", "rloo": "RLOO", "sft": "SFT", "sb3": "SB3"}[algorithm]
    section = next(f for f in vars(config) if f != "run")
    recorded = run_config(getattr(experiment, algo)(getattr(config, section)), config)
    assert recorded["algorithm"] == algorithm and recorded["run"]["stop_after"] is None
    path = write(tmp_path / "config.json", json.dumps(recorded))
    again = parse_config(experiment.Config, ["--config", str(path)], algorithm=algorithm)
    assert again.run.seed == 4 and again.run.lr == 2e-4 and again.run.stop_after is None
    assert getattr(again, section) == getattr(config, section)


EXPERIMENT_CONFIGS = sorted(
    p for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name not in ("sweeps", "accelerate")
)
SWEEP_FILES = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENT_CONFIGS, ids=lambda p: p.name)
def test_every_config_in_the_project_loads_for_its_algorithm(path):
    algorithm = read_settings_file(path)["algorithm"]
    experiment = load_experiment(algorithm)
    parse_config(experiment.Config, ["--config", str(path)], algorithm=algorithm)


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.name)
def test_every_sweep_file_makes_trial_configs_its_experiment_takes(path, tmp_path, monkeypatch):
    import optuna
    import yaml

    from rlm.sweep import SweepSpec, distributions, trial_config

    monkeypatch.chdir(ROOT)  # (the base config's path is relative to the project)
    spec = SweepSpec.read(path)
    sampler = optuna.samplers.RandomSampler(seed=0)
    params = optuna.create_study(sampler=sampler).ask(distributions(spec.space)).params
    trial = tmp_path / "trial.yaml"
    trial.write_text(yaml.safe_dump(trial_config(spec, params)))
    parsed = parse_config(load_experiment(spec.algorithm).Config, ["--config", str(trial)],
                          algorithm=spec.algorithm)  # fmt: skip
    for key, value in params.items():  # each sampled value reaches its setting
        section, _, name = key.rpartition(".")
        assert getattr(getattr(parsed, section or "run"), name) == value, key


def test_the_demo_config_spells_out_the_defaults():
    parsed = parse_config(ppo.Config, ["--config", str(ROOT / "configs" / "demo.yaml")])
    parsed.run.config = None
    assert parsed == ppo.Config()


def test_resume_takes_the_runs_settings_and_refuses_new_ones(tmp_path):
    config = parse_config(ppo.Config, ["--seed", "4", "--steps", "9"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(run_config(ppo.PPO(config.ppo), config)))
    resumed = parse_config(ppo.Config, ["--resume", str(run), "--stop-after", "5"])
    assert (resumed.run.seed, resumed.run.steps, resumed.run.stop_after) == (4, 9, 5)
    assert resumed.run.resume == run
    with pytest.raises(ConfigError, match="--lr cannot change"):
        parse_config(ppo.Config, ["--resume", str(run), "--lr", "0.5"])
    with pytest.raises(ConfigError, match="drop --config"):
        parse_config(ppo.Config, ["--resume", str(run), "--config", str(run / "config.json")])


def help_sections(algorithm: str) -> dict[str, str]:
    """The --help text of an experiment, by option group."""
    experiment = load_experiment(algorithm)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parse_config(experiment.Config, ["--help"])
    sections: dict[str, list[str]] = {}
    current = ""
    for line in out.getvalue().splitlines():
        title = re.match(r"^[╭─ ]*([\w.]+ options)\b", line)  # boxed, or plain when piped
        if title:
            current = title.group(1)
        sections.setdefault(current, []).append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


def test_every_experiment_shows_the_same_shared_flags_with_the_same_defaults():
    helps = {algorithm: help_sections(algorithm) for algorithm in EXPERIMENTS}
    for section in ("run options", "run.tracking options"):
        # Words, not columns: argparse aligns help text by the longest flag of the whole
        # parser, which differs with each algorithm's own flags.
        texts = {algorithm: " ".join(help[section].split()) for algorithm, help in helps.items()}
        assert len(set(texts.values())) == 1, section
    shared = helps["ppo"]["run options"]
    for flag in ("--steps", "--config", "--resume", "--stop-after", "--token-budget", "--seed"):
        assert flag in shared
    assert "--kl-coef" in helps["ppo"]["ppo options"] and "--epochs" in helps["ppo"]["ppo options"]
    for algorithm in ("grpo", "rloo"):
        own = helps[algorithm][f"{algorithm} options"]
        assert "--kl-coef" in own and "--epochs" in own and "--beta" not in own
