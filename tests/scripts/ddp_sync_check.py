"""Run under torchrun: each rank updates on its own episodes and reports its weights.

    torchrun --standalone --nproc_per_node 2 tests/scripts/ddp_sync_check.py MODEL_DIR OUT_DIR

With gradients averaged across processes (DDP through accelerate), every rank ends with
the same weights although each saw different data. Each rank writes ``OUT_DIR/rank_<i>.json``
with a checksum of its trainable weights and its first prompt.
"""

import json
import sys
from pathlib import Path

import gymnasium as gym
import torch
from accelerate import Accelerator

import envs  # noqa: F401
from rlm.models import load_causal_lm
from rlm.policy import ActorCritic, LoraSettings, add_lora
from rlm.ppo_update import PPOSettings, compute_advantages, ppo_update
from rlm.rollout import GenerationSettings, PlainFormat, collect_episodes, score_episodes

torch.set_num_threads(1)
accelerator = Accelerator(cpu=True)
torch.manual_seed(0)  # the same initial weights on every rank
policy, tokenizer = load_causal_lm(sys.argv[1])
actor_critic = ActorCritic(add_lora(policy, LoraSettings(r=4)))
optimizer = torch.optim.AdamW([p for p in actor_critic.parameters() if p.requires_grad], 1e-2)
scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0)
model, optimizer = accelerator.prepare(actor_critic, optimizer)
settings = PPOSettings(epochs=1, minibatches=1)
venv = gym.make_vec("rlm/Sentiment-v0", num_envs=4)
episodes = collect_episodes(
    actor_critic, tokenizer, venv, generation=GenerationSettings(max_new_tokens=6),
    prompt_format=PlainFormat(), seed=100 * (accelerator.process_index + 1),
)  # fmt: skip
score_episodes(actor_critic, episodes, micro_batch_size=4, temperature=1.0)
advantages = compute_advantages(episodes, 0.05, settings)
ppo_update(
    accelerator, model, optimizer, scheduler, episodes, advantages, settings, temperature=1.0
)
trained = [p for p in actor_critic.parameters() if p.requires_grad]
checksum = sum(float(p.detach().double().abs().sum()) for p in trained)
report = {"checksum": checksum, "prompt": episodes.prompts[0]}
(Path(sys.argv[2]) / f"rank_{accelerator.process_index}.json").write_text(json.dumps(report))
