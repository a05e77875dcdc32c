"""Measure what compression costs and saves: trained policies and reward models, side by side.

    python scripts/benchmark_compression.py --runs runs/demo/demo/* \\
        --reward-models runs/reward_models/lstm runs/reward_models/minilm-lora \\
        --report docs/compression.md
    python scripts/benchmark_compression.py --runs runs/<run> --arms int8-dynamic prune:sparsity=0.3

Every arm (``METHOD[:option=value,...]``, the options of ``rlm compress``) compresses each
source with :func:`rlm.compress.compress` into ``--work-dir`` (kept: a second call reuses
it; its ``compression.json`` keeps the seconds compressing took), then, in this one
process, after the uncompressed model, at ``--threads`` threads:

- policies (run folders): the held-out reward of the run's own evaluation (its prompts,
  seed, sampling, reward), the KL of the compressed policy to the uncompressed one on its
  samples, the perplexity of held-out text (the eval split's whole tweets for the
  sentiment task, else its prompts), generated tokens per second (a batch of
  ``--gen-batch`` prompts, ``--gen-tokens`` new tokens, median of 3 after a warm-up);
- reward models: accuracy, macro precision, recall and F1 and the confusion matrix on the
  test split (the split they were trained with), and completions scored per second;
- both: the size on disk, and the peak resident memory of a fresh process that loads the
  model and runs it once.

The tables (mean over seeds, and one row per run) and a plot of held-out reward against
size go to ``--report`` and the PNG beside it.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import envs  # noqa: E402,F401  (registers the rlm/ environments)
from envs.tweets import load_tweets  # noqa: E402
from rlm.compress import compress  # noqa: E402
from rlm.compression import Compression  # noqa: E402
from rlm.env import check_env_id, make_text_vector_env  # noqa: E402
from rlm.policy import ActorCritic  # noqa: E402
from rlm.rollout import make_prompt_format, resolve_prompt_format  # noqa: E402
from rlm.runner import make_evaluator, make_rewards  # noqa: E402
from rlm.saved_runs import SavedRun  # noqa: E402

DEFAULT_ARMS = [
    "bf16", "int8-dynamic", "int8-weight", "int4-weight", "prune:sparsity=0.3",
    "prune:sparsity=0.5", "prune:sparsity=0.25,structure=rows",
    "prune:sparsity=0.25,structure=heads", "prune:sparsity=0.5,recover_steps=20",
]  # fmt: skip


@dataclass
class Config:
    runs: list[Path] = field(default_factory=list)
    """Run folders whose trained policies are compressed."""
    reward_models: list[Path] = field(default_factory=list)
    """Reward-model folders (or their training run folders)."""
    arms: list[str] = field(default_factory=lambda: list(DEFAULT_ARMS))
    """METHOD[:option=value,...]; the LSTM takes bf16 and prune only (others are skipped)."""
    work_dir: Path = Path("runs/compression")
    """Where the compressed folders go (reused when they exist)."""
    report: Path | None = None
    """Markdown file for the tables (the figure goes beside it); default: print only."""
    threads: int = 2
    """torch CPU threads for every measurement."""
    gen_batch: int = 16
    """Prompts generated at once for the tokens-per-second measurement."""
    gen_tokens: int = 20
    """New tokens per prompt in that measurement."""
    perplexity_texts: int = 128
    """Held-out texts for the perplexity."""
    scoring_texts: int = 512
    """Test texts scored for the reward models' throughput."""


def parse_arm(arm: str) -> Compression:
    """``prune:sparsity=0.5,recover_steps=20`` as a :class:`Compression`."""
    method, _, rest = arm.partition(":")
    kinds = {f.name: f.type for f in fields(Compression)}
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        kind = str(kinds[key])
        options[key] = int(value) if kind == "int" else float(value) if kind == "float" else value
    return Compression(method, **options)  # type: ignore[arg-type]


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def peak_memory_mb(kind: str, folder: Path, threads: int, dtype: str = "float32") -> float:
    """Peak RSS of a fresh process that loads the model (in ``dtype``) and runs it once
    (this script's ``_memory`` mode), in MB."""
    command = [sys.executable, str(Path(__file__).resolve()), "_memory", kind, str(folder),
               str(threads), dtype]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def _memory_child(kind: str, folder: str, threads: str, dtype: str) -> None:
    torch.set_num_threads(int(threads))
    if kind == "policy":
        from rlm.models import load_causal_lm

        model, tokenizer = load_causal_lm(folder, dtype=getattr(torch, dtype))
        tokens_per_second(model, tokenizer, ["The weather today is"] * 4, 8)
    else:
        from rlm.scorers.classifier import ClassifierReward

        ClassifierReward(folder)([""] * 32, ["what a lovely day"] * 32)
    from rlm.memory import peak_resident_gib

    print(peak_resident_gib() * 1024)  # MiB


# --- policies ---------------------------------------------------------------------------------


def heldout_texts(saved: SavedRun, limit: int) -> list[str]:
    """Whole tweets of the eval split for the sentiment task; else the eval prompts."""
    env = make_text_vector_env(check_env_id(saved.env_id), 1, split="eval").envs[0]
    tasks = list(env.tasks)[:limit]
    if "tweet_id" in tasks[0]:
        tweets = load_tweets()
        return [tweets[task["tweet_id"]]["text"] for task in tasks]
    return [str(task["prompt"]) for task in tasks]


@torch.no_grad()
def perplexity(model: Any, tokenizer: Any, texts: list[str]) -> float:
    total, count = 0.0, 0
    for lo in range(0, len(texts), 16):
        batch = tokenizer(texts[lo : lo + 16], return_tensors="pt", padding=True)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        out = model(**batch, labels=labels)
        tokens = int((labels[:, 1:] != -100).sum())
        total += float(out.loss) * tokens
        count += tokens
    return math.exp(total / count)


@torch.no_grad()
def tokens_per_second(model: Any, tokenizer: Any, prompts: list[str], new_tokens: int) -> float:
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    settings = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                    pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    model.generate(**batch, **{**settings, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        model.generate(**batch, **settings)
        times.append(time.perf_counter() - start)
    return len(prompts) * new_tokens / statistics.median(times)


def measure_policy(run: Path, folder: Path, reference: Any, config: Config) -> dict[str, Any]:
    """Everything measured of the policy in run folder ``folder`` (the original or a
    compressed copy of ``run``), against the uncompressed ``reference``."""
    saved = SavedRun.open(folder)
    settings = saved.run_settings
    record = folder / "compression.json"
    method = json.loads(record.read_text())["method"] if record.is_file() else None
    # A bfloat16 policy computes in bfloat16 (loading it as float32 would measure float32).
    policy, tokenizer = saved.load_policy(torch.bfloat16 if method == "bf16" else torch.float32)
    policy.eval()
    env_id = check_env_id(settings.env_id)
    env = make_text_vector_env(env_id, 1, split="eval").envs[0]
    reward, _, heldout = make_rewards(settings, env)
    kind = resolve_prompt_format(
        settings.prompt_format, tokenizer, conversational=env.conversational
    )
    evaluator = make_evaluator(
        settings, env_id, make_prompt_format(kind, tokenizer), reward, heldout
    )
    metrics, _ = evaluator(ActorCritic(policy, reference=reference), tokenizer, show_progress=False)
    texts = heldout_texts(saved, config.perplexity_texts)
    prompts = [str(t["prompt"]) for t in list(env.tasks)[: config.gen_batch]]
    return {
        "reward": metrics["eval/reward_mean"],
        "sem": metrics["eval/reward_sem"],
        "kl_to_uncompressed": metrics["eval/kl"],
        "perplexity": perplexity(policy, tokenizer, texts),
        "tokens_per_s": tokens_per_second(policy, tokenizer, prompts, config.gen_tokens),
        "size_mb": folder_size(saved.policy_dir) / 1e6,
        "peak_mb": peak_memory_mb(
            "policy",
            saved.policy_dir,
            config.threads,
            "bfloat16" if method == "bf16" else "float32",
        ),  # fmt: skip
        "folder": str(folder),
    }


def benchmark_policies(config: Config) -> list[dict[str, Any]]:
    from peft import PeftModel

    rows = []
    for run in config.runs:
        original, tokenizer = SavedRun.open(run).load_policy()
        if isinstance(original, PeftModel):
            original = original.merge_and_unload()
        original.eval().requires_grad_(False)
        # The uncompressed policy as a folder of its own: measured as every arm is.
        base = config.work_dir / run.name / "uncompressed"
        if not base.exists():
            compress_copy(run, base, original, tokenizer)
        rows.append(
            {"run": run.name, "arm": "uncompressed", **measure_policy(run, base, original, config)}
        )
        print(rows[-1], flush=True)
        for arm in config.arms:
            out = config.work_dir / run.name / arm.replace(":", "_").replace(",", "_")
            if not out.exists():
                compress(run, out, parse_arm(arm))
            seconds = json.loads((out / "compression.json").read_text())["seconds"]
            rows.append({"run": run.name, "arm": arm, "compress_s": seconds,
                         **measure_policy(run, out, original, config)})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def compress_copy(run: Path, out: Path, merged: Any, tokenizer: Any) -> None:
    """The run with its merged policy saved at full precision (the uncompressed arm)."""
    import shutil

    (out / "policy").mkdir(parents=True)
    merged.save_pretrained(out / "policy")
    tokenizer.save_pretrained(out / "policy")
    for name in ("config.json", "summary.json"):
        shutil.copy2(run / name, out / name)


# --- reward models ----------------------------------------------------------------------------


def measure_reward_model(folder: Path, config: Config) -> dict[str, Any]:
    from rlm.reward_models.data import load_labelled_tweets, split_dataset
    from rlm.reward_models.loading import load_reward_model
    from rlm.reward_models.training import evaluate
    from rlm.scorers.classifier import ClassifierReward

    data, cleaning = load_labelled_tweets()
    test = split_dataset(data, seed=0, cleaning=cleaning).test  # the split it was trained on
    loaded = load_reward_model(folder, device="cpu")
    metrics, _ = evaluate(loaded.model, loaded.encode, test, batch_size=128)
    reward = ClassifierReward(str(folder), label="positive")
    texts = test.texts[: config.scoring_texts]
    reward([""] * 32, texts[:32])  # warm-up
    start = time.perf_counter()
    reward([""] * len(texts), texts)
    return {
        "accuracy": metrics["accuracy"],
        "precision": metrics["macro"]["precision"],
        "recall": metrics["macro"]["recall"],
        "f1": metrics["macro"]["f1"],
        "confusion": metrics["confusion_matrix"],
        "scored_per_s": len(texts) / (time.perf_counter() - start),
        "size_mb": folder_size(loaded_folder(folder)) / 1e6,
        "peak_mb": peak_memory_mb("reward", folder, config.threads),
    }


def loaded_folder(folder: Path) -> Path:
    from rlm.reward_models.folder import find_model_folder

    return find_model_folder(folder)


def benchmark_reward_models(config: Config) -> list[dict[str, Any]]:
    from rlm.errors import ConfigError

    rows = []
    for source in config.reward_models:
        rows.append(
            {"model": source.name, "arm": "uncompressed", **measure_reward_model(source, config)}
        )
        print(rows[-1], flush=True)
        for arm in config.arms:
            compression = parse_arm(arm)
            if compression.recover_steps:
                continue  # recovery fine-tunes policies on their own samples
            out = config.work_dir / source.name / arm.replace(":", "_").replace(",", "_")
            try:
                if not out.exists():
                    compress(source, out, compression)
            except ConfigError as exc:
                print(f"{source.name} {arm}: skipped ({exc})", flush=True)
                continue
            rows.append({"model": source.name, "arm": arm, **measure_reward_model(out, config)})
            print(rows[-1], flush=True)
    return rows


# --- report -----------------------------------------------------------------------------------


def policy_tables(rows: list[dict[str, Any]]) -> str:
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    header = ("| arm | held-out reward (mean over runs) | KL to uncompressed (nats) | perplexity "
              "| size MB | peak memory MB | generated tokens/s | compress s | runs |")  # fmt: skip
    lines = [header, "|" + " --- |" * 9]
    for arm in arms:
        group = [r for r in rows if r["arm"] == arm]
        keys = ("reward", "kl_to_uncompressed", "perplexity", "size_mb", "peak_mb", "tokens_per_s")
        mean = {k: statistics.mean(r[k] for r in group) for k in keys}
        took = [r["compress_s"] for r in group if "compress_s" in r]
        seconds = f"{statistics.mean(took):.1f}" if took else "-"
        spread = (
            f" [{min(r['reward'] for r in group):+.3f}, {max(r['reward'] for r in group):+.3f}]"
        )
        lines.append(
            f"| {arm} | {mean['reward']:+.3f}{spread if len(group) > 1 else ''} "
            f"| {mean['kl_to_uncompressed']:.2f} | {mean['perplexity']:.1f} "
            f"| {mean['size_mb']:.0f} | {mean['peak_mb']:.0f} | {mean['tokens_per_s']:.0f} "
            f"| {seconds} | {len(group)} |"
        )
    runs = ["", "| run | arm | held-out reward | KL to uncompressed | perplexity | tokens/s |",
            "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    runs += [f"| `{r['run']}` | {r['arm']} | {r['reward']:+.3f} ± {r['sem']:.3f} "
             f"| {r['kl_to_uncompressed']:.2f} | {r['perplexity']:.1f} | {r['tokens_per_s']:.0f} |"
             for r in rows]  # fmt: skip
    return "\n".join(lines + runs)


def reward_model_table(rows: list[dict[str, Any]]) -> str:
    header = ("| model | arm | accuracy | macro precision | macro recall | macro F1 | size MB "
              "| peak memory MB | scored/s | confusion (rows: true neg, neu, pos) |")  # fmt: skip
    lines = [header, "|" + " --- |" * 10]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['arm']} | {r['accuracy']:.3f} | {r['precision']:.3f} "
            f"| {r['recall']:.3f} | {r['f1']:.3f} | {r['size_mb']:.1f} | {r['peak_mb']:.0f} "
            f"| {r['scored_per_s']:.0f} | {r['confusion']} |"
        )
    return "\n".join(lines)


def figure(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for arm in dict.fromkeys(r["arm"] for r in rows):
        group = [r for r in rows if r["arm"] == arm]
        ax.scatter([r["size_mb"] for r in group], [r["reward"] for r in group], label=arm)
    ax.set_xlabel("policy size on disk (MB)")
    ax.set_ylabel("held-out reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("One point per run and arm")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(config: Config) -> None:
    torch.set_num_threads(config.threads)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    policy_rows = benchmark_policies(config) if config.runs else []
    reward_rows = benchmark_reward_models(config) if config.reward_models else []
    (config.work_dir / "results.json").write_text(json.dumps(
        {"policies": policy_rows, "reward_models": reward_rows}, indent=2))  # fmt: skip
    parts = [f"{torch.get_num_threads()} threads, torch {torch.__version__}", ""]
    if policy_rows:
        parts += [policy_tables(policy_rows), ""]
    if reward_rows:
        parts += [reward_model_table(reward_rows), ""]
    text = "\n".join(parts)
    print(text)
    if config.report is not None and policy_rows:
        figure(policy_rows, config.report.with_suffix(".png"))
    if config.report is not None:
        config.report.write_text(text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_memory"]:
        _memory_child(*sys.argv[2:6])
    else:
        main(tyro.cli(Config))
