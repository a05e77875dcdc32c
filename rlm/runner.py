"""The one experiment runner: every algorithm's run goes through :func:`run_experiment`.

    settings ─> validate ─> environments and rewards ─> policy (+LoRA) ─> evaluate before
      ─> run folder and trackers ─> the algorithm trains, calling Run.end_step each step
         (counters, evaluation every N steps, logging, checkpoints, stop) ─> policy/
      ─> summary.json; on an error the run is marked failed

An algorithm is a small :class:`Algorithm` subclass: PPO's loop over
:class:`rlm.ppo_learner.PPOLearner` (experiments/ppo.py), or a TRL trainer driven through
:mod:`rlm.trl_runner` (experiments/grpo.py, rloo.py, sft.py). Everything else, including
resuming, is here once.

Example:
    >>> summary = run_experiment(config.run, PPO(config.ppo), config)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, set_seed
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlm.alarms import AlarmSettings, AlarmWatch
from rlm.checkpoint import (
    checkpoint_path,
    complete_checkpoint,
    find_resume_checkpoint,
    read_run_state,
)
from rlm.diagnostics import DIAGNOSTICS, heldout_gap
from rlm.env import TextEnv, TextVectorEnv, check_env_id, make_text_vector_env
from rlm.errors import ConfigError, DivergedError, OutOfMemory
from rlm.evaluation import Evaluator
from rlm.files import write_json
from rlm.memory import memory_metrics
from rlm.models import load_causal_lm, resolve_model_path
from rlm.policy import ActorCritic, add_lora
from rlm.preemption import Preempted, PreemptionSignals, signals_ignored
from rlm.processes import (
    all_processes_sum,
    clear_failures,
    lost_another_process,
    peer_failed,
    record_failure,
)
from rlm.rewards import RewardFunction, TimeLimitedReward
from rlm.rollout import PromptFormat, make_prompt_format, resolve_prompt_format
from rlm.run import RunDir, make_run_name, to_plain
from rlm.scorers import Normalized, make_reward
from rlm.settings import RunSettings, eval_seed
from rlm.sharding import (
    check_sharding_launch,
    full_weights,
    is_sharded,
    save_pretrained_policy,
    whole_state_dict,
)
from rlm.tracking import NullTracker, Tracker, tracker_for
from rlm.vllm_engine import check_vllm_available


class Algorithm:
    """What an algorithm tells the runner. Subclasses set :attr:`name` and :meth:`train`."""

    name: ClassVar[str]
    """Short name: the config section, ``experiments/<name>.py``, ``summary.json``."""
    generates: ClassVar[bool] = True
    """Whether training generates tokens (SFT learns from demonstrations and does not)."""
    samples_with_vllm: ClassVar[bool] = False
    """Whether ``--use-vllm`` can sample this algorithm's rollouts."""

    @property
    def label(self) -> str:
        """The run name's experiment part and the progress bar's title (default: the name)."""
        return self.name

    def validate(self, settings: RunSettings) -> None:
        """Raise :class:`ConfigError` for settings this algorithm cannot run with."""

    def actor_critic(
        self, policy: PreTrainedModel | PeftModel, settings: RunSettings, dtype: torch.dtype
    ) -> ActorCritic:
        """The policy as the rollout path and the evaluation use it (and PPO trains it)."""
        return ActorCritic(policy)

    def memory_advice(self, settings: RunSettings) -> list[str]:
        """This algorithm's settings that make it need less memory, as advice for an
        out-of-memory error (for example "raise --grad-accum (now 1)")."""
        return []

    def prepare(self, env: TextEnv, settings: RunSettings) -> None:
        """Check the environment and build what can fail on bad input, before any folder
        is written (for example SFT's demonstrations)."""

    def train(self, run: Run) -> None:
        """Train from ``run.start_step`` on, calling :meth:`Run.end_step` after each step."""
        raise NotImplementedError

    def save_policy(self, run: Run, folder: Path) -> None:
        """Write the trained policy where ``--model`` can load it (adapter or full model)."""
        state = whole_state_dict(run.policy) if is_sharded(run.policy) else None
        if run.state.is_main_process:
            save_pretrained_policy(run.policy, folder, state)
            run.tokenizer.save_pretrained(str(folder))


@dataclasses.dataclass
class StepEnd:
    """What the algorithm does after a step: save a checkpoint, stop training."""

    save: bool
    stop: bool


@dataclasses.dataclass
class Run:
    """A run being trained: what is set up for the algorithm, and the step bookkeeping."""

    settings: RunSettings
    algorithm: Algorithm
    state: PartialState
    policy: ActorCritic
    tokenizer: PreTrainedTokenizerBase
    train_envs: TextVectorEnv
    """``batch_size`` environments of the train split, scoring with the training reward."""
    heldout: RewardFunction | None
    normalizer: Normalized | None
    prompt_kind: Literal["plain", "chat"]
    prompt_format: PromptFormat
    evaluator: Evaluator
    run_dir: RunDir
    tracker: Tracker | NullTracker
    checkpoint: Path | None
    """The checkpoint training resumes from (None for a fresh run)."""
    start_step: int
    eval_before: dict[str, float]
    tokens: int = 0
    episodes: int = 0
    step: int = 0
    finished: bool = False
    stopped: bool = False
    skipped_streak: int = 0
    """Steps in a row with a skipped update (``train/skipped_updates``: non-finite numbers)."""
    preempted: bool = False
    """Stopped by SIGTERM or SIGINT (:mod:`rlm.preemption`): checkpointed, to resume."""
    signals: PreemptionSignals | None = None
    wall_time_before: float = 0.0
    """Seconds an interrupted run had taken before this process resumed it."""
    started: float = dataclasses.field(default_factory=time.perf_counter)
    """When this process started the run (``time.perf_counter``)."""
    last_eval: dict[str, float] = dataclasses.field(default_factory=dict)
    alarms: AlarmWatch = dataclasses.field(default_factory=lambda: AlarmWatch(AlarmSettings()))
    """The alarms on each evaluation's diagnostics (:mod:`rlm.alarms`)."""
    _step_started: float = dataclasses.field(default_factory=time.perf_counter)
    _step_started_cpu: float = dataclasses.field(default_factory=time.process_time)
    _progress: Any = None

    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir.checkpoints_dir

    @property
    def wall_time_s(self) -> float:
        """Seconds the run has taken so far, over all the processes that ran it in turn."""
        return self.wall_time_before + time.perf_counter() - self.started

    def begin_step(self) -> None:
        """Mark the start of a step: its wall time is logged as ``perf/time_iteration``, the
        CPU time of this process as ``perf/time_iteration_cpu`` (comparable across runs
        that share the machine's cores, which wall times are not)."""
        self._step_started = time.perf_counter()
        self._step_started_cpu = time.process_time()

    def end_step(
        self, step: int, metrics: dict[str, float], *, tokens: int, episodes: int
    ) -> StepEnd:
        """Count the step's generated ``tokens`` and ``episodes`` (all processes), evaluate
        when due, log, and say whether to save a checkpoint and whether to stop.

        The last step (``--steps``, or the one that spends ``--token-budget``) is always
        evaluated and saved; ``--stop-after`` and a preempting signal (on any process)
        save and stop before the end.
        """
        settings = self.settings
        self.step, self.tokens, self.episodes = step, self.tokens + tokens, self.episodes + episodes
        spent = settings.token_budget is not None and self.tokens >= settings.token_budget
        self.finished = step >= settings.steps or spent
        metrics = {**metrics, "perf/episodes": self.episodes, "perf/tokens": self.tokens}
        if step % settings.eval_every == 0 or self.finished:
            metrics.update(self.evaluate(step))
        metrics["perf/time_iteration"] = time.perf_counter() - self._step_started
        metrics["perf/time_iteration_cpu"] = time.process_time() - self._step_started_cpu
        metrics.update(memory_metrics())  # this process's peaks so far
        self.tracker.log(metrics, step=step)
        self._show_progress(step, metrics)
        self._check_diverged(step, metrics)
        signalled = self.signals is not None and self.signals.received is not None
        # Every process stops at the same step, or the others would wait for it forever.
        self.preempted = not self.finished and all_processes_sum(int(signalled), self.state) > 0
        self.stopped = self.preempted or (
            not self.finished and settings.stop_after is not None and step >= settings.stop_after
        )
        save = step % settings.checkpoint_every == 0 or self.finished or self.stopped
        return StepEnd(save=save, stop=self.finished or self.stopped)

    def _check_diverged(self, step: int, metrics: dict[str, float]) -> None:
        """Stop, before this step is checkpointed, after ``--max-skipped-steps`` steps in a
        row whose updates were skipped for non-finite numbers."""
        skipped = metrics.get("train/skipped_updates", 0) > 0
        self.skipped_streak = self.skipped_streak + 1 if skipped else 0
        if self.skipped_streak >= self.settings.max_skipped_steps:
            raise DivergedError(
                f"step {step}: {self.skipped_streak} steps in a row had non-finite losses, "
                "gradients, logits or values, and their updates were skipped: training has "
                f"diverged. Start again with a lower --lr (this run: {self.settings.lr:g}); "
                "the run's checkpoints hold only weights from finite updates"
            )

    def evaluate(self, step: int) -> dict[str, float]:
        """Held-out evaluation on the main process (the others wait); its samples logged."""
        metrics: dict[str, float] = {}
        # Every process gathers a sharded model's weights; the main one evaluates.
        with full_weights(self.policy):
            if self.state.is_main_process:
                metrics, rows = self.evaluator(self.policy, self.tokenizer)
                metrics = with_heldout_gap(metrics, self.eval_before)
                self.tracker.log_samples(rows, step=step, table_rows=self.settings.samples_logged)
                self.last_eval = metrics
                self._sound_alarms(step, metrics)
        self.state.wait_for_everyone()
        return metrics

    def _sound_alarms(self, step: int, metrics: dict[str, float]) -> None:
        """Print, log and keep each alarm this evaluation trips anew; training goes on."""
        for trip in self.alarms.update(metrics, self.eval_before, step=step):
            tqdm.write(trip.message, file=sys.stderr)
            title = f"{self.run_dir.name}: {trip.alarm}"
            self.tracker.alert(title, trip.message, step=step, details=trip.details())

    def save_checkpoint(self, step: int, save: Callable[[Path], None]) -> None:
        """``save`` writes the algorithm's state into the step's folder; then the runner's."""
        folder = checkpoint_path(self.checkpoints_dir, step)
        save(folder)
        self.complete_checkpoint(folder)

    def complete_checkpoint(self, folder: Path) -> None:
        """Add the runner's state to a checkpoint folder the algorithm has written."""
        if self.state.is_main_process:
            complete_checkpoint(folder, self.state_dict())
        self.state.wait_for_everyone()

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs of the runner (``run_state.json``)."""
        return {
            "step": self.step,
            "finished": self.finished,
            "counters": {"tokens": self.tokens, "episodes": self.episodes},
            "eval_before": self.eval_before,
            "last_eval": self.last_eval,
            "alarms_active": sorted(self.alarms.active),
            "reward_normalizer": self.normalizer.state_dict() if self.normalizer else None,
            "wall_time_s": self.wall_time_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where :meth:`state_dict` was taken."""
        self.start_step = self.step = state["step"]
        self.finished = state["finished"]
        self.last_eval = state.get("last_eval", {})
        self.alarms = AlarmWatch(self.settings.alarms, set(state.get("alarms_active", [])))
        self.tokens, self.episodes = state["counters"]["tokens"], state["counters"]["episodes"]
        self.eval_before = state["eval_before"]
        self.wall_time_before = state["wall_time_s"]
        if self.normalizer is not None and state["reward_normalizer"] is not None:
            self.normalizer.load_state_dict(state["reward_normalizer"])

    def open_progress(self) -> None:
        """The progress bar over the run's steps, with reward and KL."""
        self._progress = tqdm(
            total=self.settings.steps, initial=self.start_step,
            desc=self.algorithm.label.upper(), disable=not self.state.is_main_process,
        )  # fmt: skip

    def _show_progress(self, step: int, metrics: dict[str, float]) -> None:
        if self._progress is None:
            return
        self._progress.update(step - self._progress.n)
        postfix = {}
        if "reward/mean" in metrics:
            postfix["reward"] = f"{metrics['reward/mean']:.3f}"
        for key, label in (("train/kl", "kl"), ("train/kl_per_token", "kl/token")):
            if key in metrics:
                postfix[label] = f"{metrics[key]:.3f}"
        if "train/loss" in metrics and not postfix:
            postfix["loss"] = f"{metrics['train/loss']:.3f}"
        self._progress.set_postfix(postfix)

    def close_progress(self) -> None:
        if self._progress is not None:
            self._progress.close()


def make_rewards(
    settings: RunSettings, env: TextEnv
) -> tuple[RewardFunction, Normalized | None, RewardFunction | None]:
    """The reward (``env``'s own, or --reward's, whose ``env`` term is ``env``'s), its
    normalised form for training (or None) and the held-out reward (or None)."""
    env_reward = env.reward_fn
    reward = make_reward(settings.reward, env_reward) if settings.reward else env_reward
    heldout = make_reward(settings.heldout_reward, env_reward) if settings.heldout_reward else None
    if settings.reward_timeout is not None:
        seconds, env_id = settings.reward_timeout, env.env_id
        reward = TimeLimitedReward(reward, seconds, env_id=env_id)
        if heldout is not None:
            heldout = TimeLimitedReward(heldout, seconds, env_id=env_id)
    normalizer = None
    if settings.normalize_reward or settings.reward_clip is not None:
        normalizer = Normalized(
            reward, normalize=settings.normalize_reward, clip=settings.reward_clip
        )
    return reward, normalizer, heldout


def make_evaluator(
    settings: RunSettings,
    env_id: str,
    prompt_format: PromptFormat,
    reward: RewardFunction,
    heldout: RewardFunction | None,
    num_prompts: int | None = None,
) -> Evaluator:
    """The run's held-out evaluation: its prompts, sampling, seed and rewards."""
    return Evaluator(
        env_id, heldout=heldout,
        # The env's own reward unless --reward replaced it or --reward-timeout wraps it.
        reward=reward if settings.reward or settings.reward_timeout is not None else None,
        num_prompts=settings.eval_prompts if num_prompts is None else num_prompts,
        batch_size=settings.eval_batch_size,
        generation=settings.generation, prompt_format=prompt_format,
        seed=eval_seed(settings.seed),
    )  # fmt: skip


def _resume_point(
    settings: RunSettings, state: PartialState
) -> tuple[RunDir, Path | None, dict[str, Any] | None]:
    """The run folder, and the checkpoint and runner state to continue from: the newest
    sound checkpoint (newer incomplete or corrupt ones are reported and deleted), or
    none, when the run starts again from step 0 in its folder with its saved settings."""
    assert settings.resume is not None
    run_dir = RunDir.open(settings.resume)
    # The main process checks (hashing every file: ~1.7 GB/s here) and tells the others.
    found = find_resume_checkpoint(run_dir.checkpoints_dir) if state.is_main_process else None
    checkpoint, skipped = broadcast_object_list([found])[0]
    if state.is_main_process:
        for folder, problem in skipped:
            print(f"warning: skipping {folder.name}: {problem}", file=sys.stderr)
            shutil.rmtree(folder, ignore_errors=True)
    clear_failures(run_dir.path, state)  # an earlier attempt's
    state.wait_for_everyone()
    if checkpoint is None:
        if state.is_main_process:
            print(
                f"--resume {settings.resume}: no complete checkpoint; the run starts again "
                "from step 0 with its saved settings",
                file=sys.stderr,
            )
        return run_dir, None, None
    resumed = read_run_state(checkpoint)
    if settings.stop_after is not None and settings.stop_after <= resumed["step"]:
        raise ConfigError(
            f"--resume {settings.resume}: the run stopped after step {resumed['step']}; "
            f"--stop-after {settings.stop_after} is not after it"
        )
    if resumed["finished"] and (run_dir.path / "summary.json").is_file():
        raise ConfigError(
            f"--resume {settings.resume}: the run already finished (step {resumed['step']}); "
            "evaluate it with scripts/evaluate_run.py, or start a new run with --config "
            f"{run_dir.config_path}"
        )
    # (A finished checkpoint without summary.json: the run died while saving its policy;
    # resuming loads the checkpoint, trains no step and writes the policy and summary.)
    return run_dir, checkpoint, resumed


@dataclasses.dataclass
class _Attempt:
    """What one process's attempt at a run has set up so far: what a failure must close,
    mark and tell the other processes."""

    state: PartialState | None = None
    run_folder: Path | None = None
    tracker: Tracker | NullTracker | None = None
    run: Run | None = None


def run_experiment(
    settings: RunSettings, algorithm: Algorithm, config: object
) -> dict[str, Any] | None:
    """Train ``algorithm`` as ``settings`` say; return the summary (None if stopped early).

    ``config`` is the script's whole config (the shared settings and the algorithm's),
    written to ``config.json`` with the algorithm's name. A run that fails is marked
    ``failed`` in ``meta.json``; with several processes, the one that failed leaves its
    error for the others, which stop with :class:`rlm.errors.PeerFailed`
    (:mod:`rlm.processes`).
    """
    attempt = _Attempt()
    try:
        # Signals are caught from the start, not only while training: a SIGTERM during
        # set-up (a sweep killed while its trial loads or first evaluates) stops the run
        # after its first step, checkpointed and marked preempted, instead of killing it
        # with its meta.json still "running".
        with PreemptionSignals() as signals:
            return _run_experiment(settings, algorithm, config, attempt, signals)
    except Preempted:
        raise  # checkpointed and marked preempted
    except BaseException as exc:
        if attempt.run is not None:
            attempt.run.close_progress()  # before the error's message, not after it
        error: BaseException = exc
        if isinstance(exc, torch.OutOfMemoryError):
            error = out_of_memory(exc, settings, algorithm)
        # (The launcher sends SIGTERM to the others when a process exits: not yet.)
        with signals_ignored():
            if attempt.state is not None and attempt.state.num_processes > 1:
                if lost_another_process(exc):
                    error = peer_failed(attempt.state, attempt.run_folder)
                else:
                    record_failure(error, attempt.state, attempt.run_folder)
            if attempt.tracker is not None:
                attempt.tracker.finish("failed", error=f"{type(error).__name__}: {error}")
        if error is exc:
            raise
        raise error from exc


def out_of_memory(
    exc: torch.OutOfMemoryError, settings: RunSettings, algorithm: Algorithm
) -> OutOfMemory:
    """The error a run that ran out of accelerator memory stops with: torch's first line
    and the settings that need less memory, with their values."""
    advice = [
        f"lower --batch-size (now {settings.batch_size}), --eval-batch-size (now "
        f"{settings.eval_batch_size}) or --max-new-tokens (now {settings.max_new_tokens})",
        *algorithm.memory_advice(settings),
    ]
    if not settings.activation_checkpointing:
        advice.append("turn on --activation-checkpointing")
    if not settings.lora:
        advice.append("train a LoRA adapter (--lora) instead of every weight")
    first_line = (str(exc).strip().splitlines() or ["torch.OutOfMemoryError"])[0]
    return OutOfMemory(f"out of memory ({first_line}): {'; '.join(advice)}")


def _run_experiment(
    settings: RunSettings,
    algorithm: Algorithm,
    config: object,
    attempt: _Attempt,
    signals: PreemptionSignals,
) -> dict[str, Any] | None:
    wall_start = time.perf_counter()
    settings.validate()
    algorithm.validate(settings)
    if not algorithm.generates and settings.token_budget is not None:
        raise ConfigError(f"{algorithm.name} generates no tokens: --token-budget does not apply")
    env_id = check_env_id(settings.env_id)  # "module:id" imports module, then the bare id
    resolve_model_path(settings.model)  # fail on a bad path before any slow work
    check_sharding_launch()
    if settings.use_vllm:
        if not algorithm.samples_with_vllm:
            raise ConfigError(
                f"{algorithm.name} does not sample with vLLM: --use-vllm is for ppo, grpo and rloo"
            )
        check_vllm_available()
    if settings.threads:
        torch.set_num_threads(settings.threads)

    # --- set-up: environments and rewards, processes, policy
    train_envs = make_text_vector_env(env_id, settings.batch_size, split="train")
    env = train_envs.envs[0]
    algorithm.prepare(env, settings)
    reward, normalizer, heldout = make_rewards(settings, env)
    train_envs.set_reward(normalizer or reward)
    state = attempt.state = PartialState(cpu=not torch.cuda.is_available())
    set_seed(settings.seed + state.process_index)
    dtype = settings.weights_dtype
    policy: PreTrainedModel | PeftModel
    policy, tokenizer = load_causal_lm(
        settings.model, dtype=dtype, trust_remote_code=settings.trust_remote_code
    )
    if settings.lora_settings is not None:
        policy = add_lora(policy, settings.lora_settings)
    policy.to(state.device)
    actor_critic = algorithm.actor_critic(policy, settings, dtype).to(state.device)
    if settings.activation_checkpointing:  # (for TRL's trainers too: they train this model)
        actor_critic.checkpoint_activations()
    prompt_kind = resolve_prompt_format(
        settings.prompt_format, tokenizer, conversational=env.conversational
    )
    prompt_format = make_prompt_format(prompt_kind, tokenizer)
    evaluator = make_evaluator(settings, env_id, prompt_format, reward, heldout)

    # --- where to start: a fresh run (evaluated first, so that a broken reward fails
    # before any folder is written), the newest sound checkpoint of an interrupted one, or
    # step 0 again for an interrupted run without one.
    checkpoint, resumed = None, None
    before: dict[str, float] = {}
    before_rows: list[dict[str, Any]] = []
    if settings.resume is not None:
        run_dir, checkpoint, resumed = _resume_point(settings, state)
        attempt.run_folder = run_dir.path
    if resumed is None and state.is_main_process:
        before, before_rows = evaluator(actor_critic, tokenizer)
        before = with_heldout_gap(before, before)
    if settings.resume is None:
        # One name for all processes (it holds a timestamp), one process creates the folder.
        default_name = make_run_name(env_id, settings.exp_name or algorithm.label, settings.seed)
        name = broadcast_object_list([settings.tracking.run_name or default_name])[0]
        if state.is_main_process:
            RunDir.create(settings.tracking.output_dir, name, run_config(algorithm, config))
        state.wait_for_everyone()
        run_dir = RunDir.open(settings.tracking.output_dir / name)
        attempt.run_folder = run_dir.path
    elif resumed is None and state.is_main_process:
        run_dir.update_meta(wandb_id=None)  # starting over: a new W&B run
    tracker: Tracker | NullTracker = NullTracker()
    if state.is_main_process:
        # A resumed run's logs are cut back to its checkpoint's step (-1: all of them).
        resume_after = None
        if settings.resume is not None:
            resume_after = resumed["step"] if resumed is not None else -1
        tracker = attempt.tracker = tracker_for(
            run_dir, settings.tracking, run_dir.read_config(), resume_after=resume_after,
            # W&B plots curves against the tokens generated (SFT generates none: steps).
            step_metric="perf/tokens" if algorithm.generates else None,
        )  # fmt: skip
    run = Run(
        settings=settings, algorithm=algorithm, state=state, policy=actor_critic,
        tokenizer=tokenizer, train_envs=train_envs, heldout=heldout, normalizer=normalizer,
        prompt_kind=prompt_kind, prompt_format=prompt_format, evaluator=evaluator,
        run_dir=run_dir, tracker=tracker, checkpoint=checkpoint,
        start_step=0, eval_before=before, started=wall_start,
        alarms=AlarmWatch(settings.alarms), signals=signals,
    )  # fmt: skip
    attempt.run = run
    if resumed is not None:
        run.load_state_dict(resumed)
    else:
        tracker.log({**before, "perf/episodes": 0, "perf/tokens": 0}, step=0)
        tracker.log_samples(before_rows, step=0, table_rows=settings.samples_logged)

    # --- training, then the policy and the summary
    run.open_progress()
    algorithm.train(run)
    run.close_progress()
    if not run.finished:
        tracker.finish("preempted" if run.preempted else "stopped")
        if state.is_main_process:
            why = f"preempted ({signals.received or 'a signal on another process'})"
            print(
                f"{why if run.preempted else 'stopped'} after step {run.step}; "
                f"continue with --resume {run_dir.path}"
            )
        if run.preempted:
            raise Preempted(run.step, run_dir.path)
        return None
    algorithm.save_policy(run, run_dir.path / "policy")
    state.wait_for_everyone()
    summary = _summary(run)
    tracker.summarize(summary)
    tracker.finish("finished")
    # summary.json last: a run that has one is finished in meta.json too, and one killed
    # before writing it resumes from its final checkpoint to write it.
    if state.is_main_process:
        write_json(run_dir.path / "summary.json", summary)
        _print_summary(run, summary)
    return summary


def with_heldout_gap(metrics: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """``metrics`` with ``eval/heldout_gap`` (:func:`rlm.diagnostics.heldout_gap`) when
    the run scores a held-out reward."""
    gap = heldout_gap(metrics, before)
    return metrics if gap is None else {**metrics, "eval/heldout_gap": gap}


def run_config(algorithm: Algorithm, config: object) -> dict[str, Any]:
    """``config.json``: the algorithm's name, then the script's config as plain JSON.

    ``resume``, ``stop_after`` and the folder's ``run_name`` are left out (null): they
    belong to one command and one folder, and ``--config`` with the file starts the same
    run again, in a new folder.
    """
    plain = to_plain(config)
    assert isinstance(plain, dict) and isinstance(plain.get("run"), dict)
    plain["run"].update(resume=None, stop_after=None)
    plain["run"]["tracking"]["run_name"] = None
    return {"algorithm": algorithm.name, **plain}


def _summary(run: Run) -> dict[str, Any]:
    before, after = run.eval_before, run.last_eval
    nan = float("nan")
    summary: dict[str, Any] = {
        "algorithm": run.algorithm.name,
        "eval_reward_before": before.get("eval/reward_mean", nan),
        "eval_reward_after": after.get("eval/reward_mean", nan),
        "eval_reward_sem_before": before.get("eval/reward_sem", nan),
        "eval_reward_sem_after": after.get("eval/reward_sem", nan),
        "eval_kl_after": after.get("eval/kl", nan),
    }
    if run.heldout is not None:
        summary["eval_heldout_reward_before"] = before.get("eval/heldout_reward_mean", nan)
        summary["eval_heldout_reward_after"] = after.get("eval/heldout_reward_mean", nan)
    summary.update(
        diagnostics_before={k: before[k] for k in DIAGNOSTICS if k in before},
        diagnostics_after={k: after[k] for k in DIAGNOSTICS if k in after},
        alerts=[alert["text"] for alert in run.run_dir.read_alerts()],
        steps=run.step,
        episodes=run.episodes,
        generated_tokens=run.tokens,
        wall_time_s=run.wall_time_s,
    )
    return summary


def _print_summary(run: Run, summary: dict[str, Any]) -> None:
    print(
        f"\nheld-out reward {summary['eval_reward_before']:+.3f} -> "
        f"{summary['eval_reward_after']:+.3f} (KL to reference "
        f"{summary['eval_kl_after']:.2f} nats), {summary['generated_tokens']} tokens, "
        f"{summary['wall_time_s']:.0f} s; run folder {run.run_dir.path}"
    )
    if run.heldout is not None:
        print(
            f"held-out reward model: {summary['eval_heldout_reward_before']:+.3f} -> "
            f"{summary['eval_heldout_reward_after']:+.3f} (scored, never trained on)"
        )
    print(f"TensorBoard: tensorboard --logdir {run.run_dir.tensorboard_dir}")
    if run.tracker.wandb_mode == "offline":
        print(f"W&B (offline): wandb sync {run.run_dir.path / 'wandb'}/offline-run-*")
