"""PPO on a text environment: by default, make SmolLM2-135M continue tweets positively.

    python experiments/ppo_sentiment.py                      # the defaults: ~15 min on 2 CPU cores
    python experiments/ppo_sentiment.py --lr 3e-4 --seed 2   # any field below is a flag
    python experiments/ppo_sentiment.py --resume runs/<run>  # continue an interrupted run
    torchrun --standalone --nproc_per_node 2 experiments/ppo_sentiment.py  # several processes

Each iteration: roll out a batch of episodes with the shared rollout path (sampled
completions, one batched reward call per environment step), score them under the policy,
the frozen reference and the critic, turn the environment's rewards and a per-token KL
penalty into GAE advantages, then run clipped PPO updates. Held-out prompts are evaluated
before training, every ``eval_every`` iterations and at the end.

The run folder (``runs/<run name>/``) gets config.json, meta.json (git commit, package
versions, status), metrics.jsonl, samples.jsonl, summary.json, TensorBoard events in tb/,
the offline W&B run in wandb/ (``wandb sync`` uploads it) and checkpoints/.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import tyro
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import AutoModel, PreTrainedModel, get_scheduler

import envs  # noqa: F401  (registers the rlm/ environments)
from rlm.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from rlm.env import check_env_id, make_text_vector_env
from rlm.errors import ConfigError
from rlm.evaluation import evaluate, heldout_scores
from rlm.models import load_causal_lm, resolve_model_path
from rlm.policy import ActorCritic, LoraSettings, add_lora, check_same_tokenizer
from rlm.ppo import explained_variance
from rlm.ppo_update import (
    PPOSettings,
    compute_advantages,
    episode_statistics,
    ppo_update,
    unwrap_actor_critic,
)
from rlm.rollout import (
    GenerationSettings,
    collect_episodes,
    make_prompt_format,
    resolve_prompt_format,
    score_episodes,
)
from rlm.run import RunDir, make_run_name
from rlm.scorers import Normalized, make_reward
from rlm.scripting import run_cli
from rlm.tracking import NullTracker, Tracker
from rlm.validation import check_ranges


@dataclass
class Config:
    """PPO on an rlm text environment."""

    # --- task and model
    env_id: str = "rlm/Sentiment-v0"
    """Registered environment id (see `python -m rlm list-envs`)."""
    model: str = "default"
    """Policy: 'default' (embedded SmolLM2-135M-Instruct), a local folder, or a Hub id."""
    prompt_format: Literal["auto", "plain", "chat"] = "auto"
    """'plain' continues the observation text; 'chat' wraps turns in the chat template;
    'auto' is chat for multi-turn tasks (when the tokenizer has a template), else plain."""
    exp_name: str = Path(__file__).stem
    """Experiment name, part of the run name."""
    seed: int = 1
    """Seed of everything: prompts, sampling, initialisation."""

    # --- reward
    reward: str | None = None
    """Reward replacing the environment's: a scorer name, a weighted sum such as
    '0.7*vader + 0.3*repetition', 'env + 0.5*unfinished', or a reward-model folder
    (docs/rewards.md). Default: the environment's own."""
    heldout_reward: str | None = None
    """A second reward scored on the same samples but never trained on, to watch
    over-optimisation (logged as heldout/reward_mean and eval/heldout_reward_mean)."""
    normalize_reward: bool = False
    """Standardise training rewards by their running mean and std (evaluation stays raw)."""
    reward_clip: float | None = None
    """Clip training rewards to [-clip, clip] (after normalising, if on)."""

    # --- budget
    iterations: int = 30
    """PPO iterations (rollout + update)."""
    token_budget: int | None = None
    """Stop after the iteration in which this many policy tokens were generated for training
    (all processes): equal budgets across algorithms. --iterations stays the upper bound."""
    batch_size: int = 16
    """Episodes per iteration, per process."""
    max_new_tokens: int = 20
    """Tokens per completion at most."""
    temperature: float = 1.0
    """Sampling temperature (also applied to log-probs in the loss)."""

    # --- optimisation
    lr: float = 1e-3
    """AdamW learning rate (LoRA adapter, value head)."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """Learning-rate schedule over the run."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    lora: bool = True
    """Train a LoRA adapter (reference = adapter off); --no-lora fine-tunes all weights."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    value_model: str | None = None
    """Separate critic trunk (same tokenizer as the policy); default: a head on the policy."""
    ppo: Annotated[PPOSettings, tyro.conf.OmitArgPrefixes] = field(default_factory=PPOSettings)
    """PPO update and KL penalty (flags without a prefix: --epochs, --kl-coef, ...)."""

    # --- evaluation, logging, checkpoints
    eval_every: int = 15
    """Evaluate on held-out prompts every this many iterations (and before and after)."""
    eval_prompts: int = 64
    """Held-out prompts per evaluation."""
    eval_batch_size: int = 32
    """Held-out prompts generated at once."""
    samples_logged: int = 16
    """Evaluation samples per table."""
    output_dir: Path = Path("runs")
    """Parent folder of run folders."""
    wandb: Literal["auto", "online", "offline", "disabled"] = "auto"
    """W&B mode; 'auto' is online when logged in, else offline."""
    wandb_project: str = "rlm"
    """W&B project."""
    tensorboard: bool = True
    """Write TensorBoard events."""
    checkpoint_every: int = 10
    """Save a resumable checkpoint every this many iterations (and at the end)."""
    resume: Path | None = None
    """Run folder to continue from its newest checkpoint, with its saved config."""
    stop_after: int | None = None
    """Stop (resumable) after this iteration, as a preempted job would."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Weights' dtype: auto is bfloat16 on a GPU that supports it, float32 on CPU."""
    threads: int | None = None
    """torch CPU threads (default: torch's choice)."""


def validate(config: Config) -> None:
    """Raise ConfigError for any value out of range, before anything is loaded or written."""
    check_ranges(
        config,
        at_least_one=["iterations", "token_budget", "batch_size", "max_new_tokens", "eval_every",
                      "eval_prompts", "eval_batch_size", "checkpoint_every", "lora_r",
                      "lora_alpha"],
        positive=["lr", "temperature", "reward_clip"],
        non_negative=["weight_decay"],
    )  # fmt: skip
    config.ppo.validate(config.batch_size)
    if config.eval_prompts % config.eval_batch_size:
        raise ConfigError(
            f"--eval-prompts ({config.eval_prompts}) must be a multiple of --eval-batch-size "
            f"({config.eval_batch_size})"
        )
    if config.stop_after is not None and config.stop_after < 1:
        raise ConfigError(f"--stop-after must be at least 1, got {config.stop_after}")


def load_config(run_folder: Path) -> Config:
    """The config a run was started with (for --resume)."""
    path = Path(run_folder) / "config.json"
    if not path.exists():
        raise ConfigError(f"--resume {run_folder}: no config.json there; pass a run folder")
    saved = json.loads(path.read_text())
    fields = {f.name: f for f in dataclasses.fields(Config)}
    values = {k: v for k, v in saved.items() if k in fields and k not in ("resume", "stop_after")}
    values["output_dir"] = Path(values["output_dir"])
    values["ppo"] = PPOSettings(**values["ppo"])
    return Config(**values)


def main(config: Config) -> dict[str, Any]:
    """Train; return the summary (eval reward before/after, KL, wall time)."""
    wall_start = time.time()
    stop_after = config.stop_after
    if config.resume is not None:
        resume_dir = Path(config.resume)
        config = dataclasses.replace(load_config(resume_dir), resume=resume_dir)
    validate(config)
    env_id = check_env_id(config.env_id)  # "module:id" imports module, then the bare id
    resolve_model_path(config.model)  # fail on a bad path before any slow work
    if config.threads:
        torch.set_num_threads(config.threads)

    # --- set-up: processes, model, environments
    settings = config.ppo
    # cpu=True is what makes accelerate pick gloo for several CPU processes under torchrun.
    accelerator = Accelerator(
        gradient_accumulation_steps=settings.grad_accum, cpu=not torch.cuda.is_available()
    )
    set_seed(config.seed + accelerator.process_index)
    dtype = torch.float32
    if config.dtype == "bfloat16" or (
        config.dtype == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    ):
        dtype = torch.bfloat16
    policy: PreTrainedModel | PeftModel
    policy, tokenizer = load_causal_lm(config.model, dtype=dtype)
    if config.lora:
        policy = add_lora(policy, LoraSettings(r=config.lora_r, alpha=config.lora_alpha))
    value_model = None
    if config.value_model is not None:
        value_model = AutoModel.from_pretrained(resolve_model_path(config.value_model), dtype=dtype)
        check_same_tokenizer(len(tokenizer), value_model.config.get_text_config().vocab_size)
    policy.to(accelerator.device)
    actor_critic = ActorCritic(policy, value_model).to(accelerator.device)
    train_envs = make_text_vector_env(env_id, config.batch_size, split="train")
    eval_envs = make_text_vector_env(env_id, config.eval_batch_size, split="eval")
    # Rewards: the environment's or --reward's; training may see them normalised.
    env_reward = train_envs.envs[0].reward_fn
    reward = make_reward(config.reward, env_reward) if config.reward else env_reward
    normalizer = None
    if config.normalize_reward or config.reward_clip is not None:
        normalizer = Normalized(reward, normalize=config.normalize_reward, clip=config.reward_clip)
    train_envs.set_reward(normalizer or reward)
    eval_envs.set_reward(reward)
    heldout = make_reward(config.heldout_reward, env_reward) if config.heldout_reward else None
    prompt_kind = resolve_prompt_format(
        config.prompt_format, tokenizer, conversational=train_envs.envs[0].conversational
    )
    prompt_format = make_prompt_format(prompt_kind, tokenizer)
    generation = GenerationSettings(config.max_new_tokens, config.temperature)
    trainable = [p for p in actor_critic.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_iteration = settings.epochs * settings.minibatches
    scheduler = get_scheduler(
        config.lr_schedule, optimizer, 0, config.iterations * steps_per_iteration
    )
    model, optimizer = accelerator.prepare(actor_critic, optimizer)
    kl_ctl = settings.kl_controller()

    def run_evaluation() -> tuple[dict[str, float], list[dict]]:
        return evaluate(
            unwrap_actor_critic(accelerator, model), tokenizer, eval_envs,
            num_prompts=config.eval_prompts, generation=generation,
            prompt_format=prompt_format, seed=config.seed + 10_000, heldout_reward=heldout,
        )  # fmt: skip

    # --- where to start: a fresh run (evaluated first, so that a broken reward fails
    # before any folder is written) or the newest checkpoint of an interrupted one.
    start_iteration, counters = 0, {"episodes": 0, "tokens": 0}
    before: dict[str, float] = {}
    if config.resume is not None:
        run_dir = RunDir.open(config.resume)
        checkpoints = list_checkpoints(run_dir.checkpoints_dir)
        if not checkpoints:
            raise ConfigError(f"--resume {config.resume}: the run has no checkpoint to resume")
        state = load_checkpoint(
            accelerator,
            unwrap_actor_critic(accelerator, model),
            optimizer,
            scheduler,
            checkpoints[-1],
        )
        start_iteration = state["iteration"]
        if start_iteration >= config.iterations:
            raise ConfigError(
                f"--resume {config.resume}: the run already finished its {config.iterations} "
                "iterations"
            )
        kl_ctl.load_state_dict(state["kl_controller"])
        if normalizer is not None:
            normalizer.load_state_dict(state["reward_normalizer"])
        counters = state["counters"]
        before = state["eval_before"]
    else:
        before, before_rows = run_evaluation() if accelerator.is_main_process else ({}, [])
        # One name for all processes (it holds a timestamp), one process creates the folder.
        names = broadcast_object_list([make_run_name(env_id, config.exp_name, config.seed)])
        if accelerator.is_main_process:
            RunDir.create(config.output_dir, names[0], dataclasses.asdict(config))
        accelerator.wait_for_everyone()
        run_dir = RunDir.open(config.output_dir / names[0])
    tracker = (
        Tracker(
            run_dir,
            project=config.wandb_project,
            run_name=run_dir.path.name,
            config=dataclasses.asdict(config),
            wandb=config.wandb,
            tensorboard=config.tensorboard,
            resume=config.resume is not None,
        )  # fmt: skip
        if accelerator.is_main_process
        else NullTracker()
    )
    if config.resume is None:
        tracker.log({**before, "perf/episodes": 0, "perf/tokens": 0}, step=0)
        tracker.log_samples(before_rows[: config.samples_logged], step=0)

    # --- the loop
    last_eval = before
    step = start_iteration
    progress = tqdm(
        range(start_iteration, config.iterations), initial=start_iteration,
        total=config.iterations, desc="PPO", disable=not accelerator.is_main_process,
    )  # fmt: skip
    try:
        for iteration in progress:
            step = iteration + 1
            iteration_start = time.perf_counter()
            ac = unwrap_actor_critic(accelerator, model)
            # Rollout seeds depend only on (seed, iteration, process): resumes replay exactly.
            env_seed = (config.seed * 1_000_003 + iteration * accelerator.num_processes
                        + accelerator.process_index) * config.batch_size  # fmt: skip
            episodes = collect_episodes(
                ac, tokenizer, train_envs, generation=generation,
                prompt_format=prompt_format, seed=env_seed,
            )  # fmt: skip
            score_episodes(ac, episodes, micro_batch_size=config.batch_size // settings.minibatches,
                           temperature=config.temperature)  # fmt: skip
            advantages = compute_advantages(episodes, kl_ctl.value, settings)
            values_before_update = episodes.values
            assert values_before_update is not None  # filled by score_episodes
            metrics = ppo_update(
                accelerator, model, optimizer, scheduler, episodes, advantages, settings,
                temperature=config.temperature,
            )  # fmt: skip

            # Statistics of this batch, over all processes.
            stats = episode_statistics(episodes, advantages)
            gathered = {
                k: accelerator.gather(v.to(accelerator.device)).float() for k, v in stats.items()
            }
            mask = episodes.action_mask.to(advantages.returns.device)
            generated = int(accelerator.gather(mask.sum().reshape(1)).sum())
            gen_time = episodes.timings["generate"]
            counters["episodes"] += int(gathered["reward"].numel())
            counters["tokens"] += generated
            kl_ctl.update(float(gathered["kl"].mean()), int(gathered["reward"].numel()))
            metrics.update(
                {
                    "reward/mean": float(gathered["reward"].mean()),
                    "reward/std": float(gathered["reward"].std())
                    if gathered["reward"].numel() > 1
                    else 0.0,
                    "train/kl": float(gathered["kl"].mean()),
                    "train/kl_coef": kl_ctl.value,
                    "train/entropy": float(gathered["entropy"].mean()),
                    "train/non_score_reward": float(gathered["non_score_reward"].mean()),
                    "train/value_mean": float(gathered["value_mean"].mean()),
                    "train/explained_variance": explained_variance(
                        values_before_update, advantages.returns, mask
                    ),
                    "train/completion_length": float(gathered["completion_length"].mean()),
                    "train/turns": float(gathered["turns"].mean()),
                    "train/lr": scheduler.get_last_lr()[0],
                    "perf/time_generate": gen_time,
                    "perf/time_score": episodes.timings["score"],
                    "perf/time_forward": episodes.timings["forward"],
                    "perf/tokens_per_second": generated
                    / accelerator.num_processes
                    / max(gen_time, 1e-9),
                    "perf/episodes": counters["episodes"],
                    "perf/tokens": counters["tokens"],
                }
            )
            if heldout is not None:
                scores = torch.tensor(heldout_scores(heldout, episodes), device=accelerator.device)
                metrics["heldout/reward_mean"] = float(accelerator.gather(scores).mean())
            for key, mean in episodes.component_means().items():
                metrics[key] = float(
                    accelerator.gather(torch.tensor([mean], device=accelerator.device)).mean()
                )
            final = step == config.iterations or (
                config.token_budget is not None and counters["tokens"] >= config.token_budget
            )
            if step % config.eval_every == 0 or final:
                if accelerator.is_main_process:
                    last_eval, rows = run_evaluation()
                    metrics.update(last_eval)
                    tracker.log_samples(rows[: config.samples_logged], step=step)
                accelerator.wait_for_everyone()
            metrics["perf/time_iteration"] = time.perf_counter() - iteration_start
            tracker.log(metrics, step=step)
            progress.set_postfix(
                reward=f"{metrics['reward/mean']:.3f}", kl=f"{metrics['train/kl']:.2f}"
            )

            stopping = stop_after is not None and step >= stop_after
            if step % config.checkpoint_every == 0 or final or stopping:
                save_checkpoint(
                    accelerator, unwrap_actor_critic(accelerator, model), optimizer, scheduler,
                    run_dir.checkpoints_dir, step,
                    {"kl_controller": kl_ctl.state_dict(), "counters": counters,
                     "eval_before": before,
                     "reward_normalizer": normalizer.state_dict() if normalizer else None},
                )  # fmt: skip
            if stopping:
                tracker.finish("stopped")
                if accelerator.is_main_process:
                    print(f"stopped after iteration {step}; continue with --resume {run_dir.path}")
                return {}
            if final:
                break
    except BaseException as exc:
        tracker.finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise

    # --- summary
    summary = {
        "eval_reward_before": before.get("eval/reward_mean", float("nan")),
        "eval_reward_after": last_eval.get("eval/reward_mean", float("nan")),
        "eval_reward_sem_before": before.get("eval/reward_sem", float("nan")),
        "eval_reward_sem_after": last_eval.get("eval/reward_sem", float("nan")),
        "eval_kl_after": last_eval.get("eval/kl", float("nan")),
        **(
            {
                "eval_heldout_reward_before": before.get("eval/heldout_reward_mean", float("nan")),
                "eval_heldout_reward_after": last_eval.get(
                    "eval/heldout_reward_mean", float("nan")
                ),
            }
            if heldout is not None
            else {}
        ),
        "algorithm": "ppo",
        "iterations": step,
        "episodes": counters["episodes"],
        "generated_tokens": counters["tokens"],
        "wall_time_s": time.time() - wall_start,
    }
    if accelerator.is_main_process:
        (run_dir.path / "summary.json").write_text(json.dumps(summary, indent=2))
        print(
            f"\nheld-out reward {summary['eval_reward_before']:+.3f} -> "
            f"{summary['eval_reward_after']:+.3f} (KL to reference "
            f"{summary['eval_kl_after']:.2f} nats), {summary['wall_time_s']:.0f} s; "
            f"run folder {run_dir.path}"
        )
        if heldout is not None:
            print(
                f"held-out reward model: {summary['eval_heldout_reward_before']:+.3f} -> "
                f"{summary['eval_heldout_reward_after']:+.3f} (scored, never trained on)"
            )
        print(f"TensorBoard: tensorboard --logdir {run_dir.tensorboard_dir}")
        if tracker.wandb_mode == "offline":
            print(f"W&B (offline): wandb sync {run_dir.path / 'wandb'}/offline-run-*")
    tracker.finish("finished")
    return summary


def cli(argv: list[str] | None = None) -> int:
    """Parse flags, train, and turn user errors into one line and exit status 2."""
    return run_cli(main, Config, argv)


if __name__ == "__main__":
    sys.exit(cli())
