"""PPO on a text environment: by default, make SmolLM2-135M continue tweets positively.

    python experiments/ppo.py                                 # the defaults: ~8 min on 2 CPU cores
    python experiments/ppo.py --lr 3e-4 --seed 2              # any field is a flag (--help)
    python experiments/ppo.py --config configs/demo.yaml      # or a YAML file; flags override it
    python experiments/ppo.py --env-id rlm/GuessNumber-v0     # any registered environment
    python experiments/ppo.py --resume runs/<run>             # continue an interrupted run
    torchrun --standalone --nproc_per_node 2 experiments/ppo.py   # several processes

Each step is one PPO iteration (rlm/ppo_learner.py): roll out one episode in each of
``--batch-size`` environments with the shared rollout path (sampled completions, one
batched reward call per environment step), score the tokens under the policy, the frozen
reference and the critic, turn the environment's rewards and a per-token KL penalty
(``--kl-coef``) into GAE advantages, then run ``--epochs`` x ``--minibatches`` clipped PPO
updates. The runner (rlm/runner.py) evaluates held-out prompts before training, every
``--eval-every`` steps and at the end, and writes the run folder ``runs/<run name>/``:
config.json, meta.json, metrics.jsonl, samples.jsonl, summary.json, tb/, wandb/,
checkpoints/ and the trained policy in policy/.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import torch
import tyro

import envs  # noqa: F401  (registers the rlm/ environments)
from rlm.errors import ConfigError
from rlm.models import load_pretrained, resolve_model_path
from rlm.policy import ActorCritic, check_same_tokenizer
from rlm.ppo_learner import Optimization, PPOLearner
from rlm.ppo_update import PPOSettings
from rlm.runner import Algorithm, Run, run_experiment
from rlm.scripting import run_cli
from rlm.settings import RunSettings
from rlm.sharding import sharding_launch
from rlm.vllm_engine import VLLMSampler

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel


@dataclass
class Config:
    """PPO on an rlm text environment."""

    run: Annotated[RunSettings, tyro.conf.OmitArgPrefixes] = field(default_factory=RunSettings)
    """Task, model, reward, budget, evaluation and logging: every algorithm's settings."""
    ppo: Annotated[PPOSettings, tyro.conf.OmitArgPrefixes] = field(default_factory=PPOSettings)
    """PPO's update and KL penalty."""


class PPO(Algorithm):
    """rlm's PPO: one :class:`PPOLearner` iteration per step."""

    name = "ppo"
    samples_with_vllm = True

    def __init__(self, settings: PPOSettings) -> None:
        self.settings = settings

    def validate(self, settings: RunSettings) -> None:
        self.settings.validate(settings.batch_size)
        if sharding_launch() == "DeepSpeed":
            raise ConfigError(
                "rlm's PPO does not run under DeepSpeed (its rollout and checkpoints gather "
                "FSDP's shards only): launch it with configs/accelerate/fsdp.yaml"
            )

    def memory_advice(self, settings: RunSettings) -> list[str]:
        forward = self.settings.forward_batch(settings.batch_size)
        return [
            f"raise --minibatches (now {self.settings.minibatches}) or --grad-accum (now "
            f"{self.settings.grad_accum}): fewer episodes in each backward pass",
            f"lower --forward-batch-size (now {forward}): fewer in each pass without gradients",
        ]

    def actor_critic(
        self, policy: PreTrainedModel | PeftModel, settings: RunSettings, dtype: torch.dtype
    ) -> ActorCritic:
        """A value head on the policy's trunk, or on a separate critic (--value-model)."""
        from transformers import AutoModel  # after rlm: its import quiets torchao's

        value_model = None
        if self.settings.value_model is not None:
            path = resolve_model_path(self.settings.value_model)
            value_model = load_pretrained(
                AutoModel, path, dtype, trust_remote_code=settings.trust_remote_code
            )
            check_same_tokenizer(
                policy.config.get_text_config().vocab_size,
                value_model.config.get_text_config().vocab_size,
            )
        return ActorCritic(policy, value_model)

    def sampler(self, run: Run) -> VLLMSampler | None:
        """With --use-vllm, an engine on this process's GPU loaded from the start model."""
        settings = run.settings
        if not settings.use_vllm:
            return None
        return VLLMSampler.for_model(
            resolve_model_path(settings.model), seed=settings.seed + run.state.process_index,
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
            dtype=str(settings.weights_dtype).removeprefix("torch."),
        )  # fmt: skip

    def train(self, run: Run) -> None:
        settings = run.settings
        learner = PPOLearner(
            run.policy, run.tokenizer, self.settings,
            optimization=Optimization(
                lr=settings.lr, total_steps=settings.steps, weight_decay=settings.weight_decay,
                schedule=settings.lr_schedule, max_grad_norm=settings.max_grad_norm,
            ),
            generation=settings.generation, prompt_format=run.prompt_format, seed=settings.seed,
            sampler=self.sampler(run), mixed_precision=settings.mixed_precision,
        )  # fmt: skip
        if run.checkpoint is not None:
            learner.load(run.checkpoint)
        for step in range(run.start_step + 1, settings.steps + 1):
            run.begin_step()
            result = learner.step(run.train_envs, iteration=step - 1, heldout=run.heldout)
            end = run.end_step(step, result.metrics, tokens=result.tokens, episodes=result.episodes)
            if end.save:
                run.save_checkpoint(step, learner.save)
            if end.stop:
                break


def main(config: Config) -> dict[str, Any] | None:
    """Train; return the summary (held-out reward before and after, KL, tokens, wall time)."""
    return run_experiment(config.run, PPO(config.ppo), config)


def cli(argv: list[str] | None = None) -> int:
    """Parse flags (and --config), train, and turn user errors into one line and exit 2."""
    return run_cli(main, Config, argv, algorithm=PPO.name)


if __name__ == "__main__":
    sys.exit(cli())
