"""The ``rlm`` command.

    rlm list-envs                 # every registered environment with its description
    rlm check-env rlm/Search-v0   # check one environment; exit status 1 when a check fails
    rlm compress runs/<run> --method int8-dynamic -o runs/<run>-int8   # a smaller model
    rlm report runs/compare -o runs/compare/report.html   # one HTML page, opens offline
    rlm diagnose runs/compare --alarm repetition=0.1      # diagnostics from saved samples
    rlm sweep configs/sweeps/ppo_lr_kl.yaml               # Optuna; run it again to resume
    python -m rlm list-envs       # the same, without the installed script

Environments of the project's ``envs`` package are registered by importing it; pass
``--module NAME`` (repeatable) to import other modules that register environments, or name
the module in the id as Gymnasium does: ``rlm check-env my_envs:rlm/Excited-v0``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import gymnasium as gym

from rlm.env import check_env_id, registered_text_env_ids
from rlm.errors import RlmError


def _describe(env_id: str) -> str:
    entry_point = gym.spec(env_id).entry_point
    creator = (
        gym.envs.registration.load_env_creator(entry_point)
        if isinstance(entry_point, str)
        else entry_point
    )
    module = sys.modules.get(getattr(creator, "__module__", ""), None)
    doc = (getattr(creator, "__doc__", None) or getattr(module, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def _import(modules: list[str]) -> None:
    for module in modules:
        importlib.import_module(module)


def list_envs(modules: list[str]) -> int:
    _import(modules)
    ids = registered_text_env_ids()
    if not ids:
        print("no environments registered under rlm/", file=sys.stderr)
        return 1
    width = max(len(i) for i in ids)
    for env_id in ids:
        print(f"{env_id:<{width}}  {_describe(env_id)}")
    return 0


def check_env(
    env_id: str, modules: list[str], seed: int, episodes: int, tokenizer_name: str
) -> int:
    from rlm.env_check import check_text_env  # imports the checker only when asked

    _import(modules)
    env_id = check_env_id(env_id)
    tokenizer = None
    if tokenizer_name != "none":
        from rlm.models import load_tokenizer, resolve_model_path

        tokenizer = load_tokenizer(resolve_model_path(tokenizer_name))
    report = check_text_env(env_id, seed=seed, episodes=episodes, tokenizer=tokenizer)
    print(report.format())
    return 0 if report.passed else 1


def compress(args: argparse.Namespace) -> int:
    from rlm.compress import compress as compress_folder  # imports torch only when asked
    from rlm.compression import Compression

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    compression = Compression(
        method=args.method, sparsity=args.sparsity, structure=args.structure,
        recover_steps=args.recover_steps, recover_lr=args.recover_lr,
    )  # fmt: skip
    out = compress_folder(Path(args.source), Path(args.output), compression, seed=args.seed)
    print(f"{args.method} model written to {out} (see {out / 'compression.json'})")
    return 0


def report(args: argparse.Namespace) -> int:
    from rlm.report import write_report  # imports plotly only when asked
    from rlm.run_folders import find_runs

    runs = find_runs(Path(p) for p in args.runs)
    path = write_report(runs, Path(args.output), title=args.title)
    print(f"report on {len(runs)} runs written to {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _alarm_override(text: str) -> tuple[str, float | None]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(
            f"--alarm takes NAME=THRESHOLD (or NAME=none), got {text!r}"
        )
    try:
        return name.strip(), None if value.strip().lower() == "none" else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--alarm {text!r}: {value!r} is not a number") from None


def diagnose(args: argparse.Namespace) -> int:
    from rlm.diagnose import diagnose_run, format_diagnoses, run_alarm_settings
    from rlm.run_folders import find_runs

    overrides = dict(args.alarm)
    diagnoses = [
        diagnose_run(run, run_alarm_settings(run, overrides))
        for run in find_runs(Path(p) for p in args.runs)
    ]
    print(format_diagnoses(diagnoses))
    return 0


def sweep(args: argparse.Namespace) -> int:
    from rlm.sweep import Sweep, SweepSpec, write_results

    spec = SweepSpec.read(Path(args.sweep))
    study = Sweep(spec)
    if not args.results:
        print(f"sweep {spec.name}: {spec.trials} trials, {spec.workers} at once; {spec.storage}")
        study.run()
    path = write_results(study)
    print(path.read_text())
    print(f"results written to {path}")
    if study.error:
        print(f"error: {study.error}", file=sys.stderr)
        return 2
    if study.stop.is_set():
        print(f"stopped; run `rlm sweep {args.sweep}` again to resume", file=sys.stderr)
        return 75  # as a preempted run: try again later
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlm", description="rlm command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list-envs", help="list registered environments")
    listing.add_argument("--module", action="append", default=["envs"], help="module to import")
    checking = commands.add_parser("check-env", help="check a registered environment")
    checking.add_argument("env_id", help="registered id, or module:id to import module first")
    checking.add_argument("--module", action="append", default=["envs"], help="module to import")
    checking.add_argument("--seed", type=int, default=0, help="seed of the rollouts")
    checking.add_argument("--episodes", type=int, default=12, help="episodes to play")
    checking.add_argument(
        "--tokenizer", default="default",
        help="check the token view (stable-baselines3's) with this model's tokenizer: "
        "'default', a folder or a Hub id; 'none' skips it",
    )  # fmt: skip
    compressing = commands.add_parser(
        "compress", help="quantize or prune a run's policy, a model or a reward model"
    )
    compressing.add_argument("source", help="a run folder, a model folder or a reward-model folder")
    compressing.add_argument("-o", "--output", required=True, help="the folder to write (new)")
    compressing.add_argument(
        "--method", required=True, help="bf16, int8-dynamic, int8-weight, int4-weight or prune"
    )
    compressing.add_argument(
        "--sparsity", type=float, default=0.5, help="prune: share of weights set to zero"
    )
    compressing.add_argument(
        "--structure", default="unstructured", help="prune: unstructured, rows or heads"
    )
    compressing.add_argument(
        "--recover-steps",
        type=int,
        default=0,
        help="prune: fine-tune steps on the policy's own samples",
    )
    compressing.add_argument(
        "--recover-lr",
        type=float,
        default=1e-5,
        help="prune: the recovery fine-tune's learning rate",
    )
    compressing.add_argument("--seed", type=int, default=1, help="seed of the recovery samples")
    compressing.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    reporting = commands.add_parser(
        "report", help="one self-contained HTML report over run folders (opens offline)"
    )
    reporting.add_argument("runs", nargs="+", help="run folders, or folders holding them")
    reporting.add_argument("-o", "--output", required=True, help="the HTML file to write")
    reporting.add_argument("--title", default="rlm report", help="the page's title")
    diagnosing = commands.add_parser(
        "diagnose", help="over-optimisation diagnostics and alarms from runs' saved samples"
    )
    diagnosing.add_argument("runs", nargs="+", help="run folders, or folders holding them")
    diagnosing.add_argument(
        "--alarm", type=_alarm_override, action="append", default=[],
        help="NAME=THRESHOLD (or NAME=none) instead of the run's own; repeatable",
    )  # fmt: skip
    sweeping = commands.add_parser(
        "sweep", help="an Optuna sweep over a config's settings; run it again to resume"
    )
    sweeping.add_argument("sweep", help="the sweep file (YAML; see rlm/sweep.py)")
    sweeping.add_argument(
        "--results", action="store_true", help="only write and print the results table"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "list-envs":
            return list_envs(args.module)
        if args.command == "check-env":
            return check_env(args.env_id, args.module, args.seed, args.episodes, args.tokenizer)
        if args.command == "compress":
            return compress(args)
        if args.command == "report":
            return report(args)
        if args.command == "diagnose":
            return diagnose(args)
        if args.command == "sweep":
            return sweep(args)
    except RlmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
