"""Run under torchrun: rlm's PPO pieces on a policy that FSDP2 shards over two CPU processes.

    torchrun --standalone --nproc_per_node 2 tests/scripts/fsdp_check.py MODEL_DIR OUT_DIR lora|full

accelerate shards only on GPUs, so this script shards the :class:`ActorCritic` as
accelerate's FSDP2 preparation does (``fully_shard`` on every module its
TRANSFORMER_BASED_WRAP policy picks, then on the whole) with torch's own FSDP2 over gloo.
Then it runs what the learner and the runner run on it: a rollout and the passes without
gradients under :func:`rlm.sharding.full_weights` (the ranks generate different lengths),
an update, a checkpoint saved and loaded into a second sharded model, and the policy's
``save_pretrained`` folder. Each rank writes ``OUT_DIR/rank_<i>.json``.
"""

import copy
import json
import sys
from pathlib import Path

import gymnasium as gym
import torch
import torch.distributed as dist
from accelerate import PartialState
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
from peft import PeftModel
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM

import envs  # noqa: F401
from rlm.checkpoint import load_training_state, save_training_state
from rlm.models import load_causal_lm
from rlm.policy import ActorCritic, LoraSettings, add_lora
from rlm.rollout import GenerationSettings, PlainFormat, collect_episodes, score_episodes
from rlm.sharding import full_weights, is_sharded, whole_state_dict

model_dir, out_dir, kind = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)
state = PartialState(cpu=True)  # gloo
rank = state.process_index


def build() -> ActorCritic:
    torch.manual_seed(0)  # the same initial weights on every rank
    policy, _ = load_causal_lm(str(model_dir))
    return ActorCritic(add_lora(policy, LoraSettings(r=4)) if kind == "lora" else policy)


def shard(model: ActorCritic) -> list[str]:
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap"
    )
    wraps = fsdp2_prepare_auto_wrap_policy(plugin, model)
    units = [name for name, m in model.named_modules() if wraps(m)]
    for name in reversed(units):  # the innermost first, as accelerate does
        fully_shard(model.get_submodule(name))
    fully_shard(model)
    return units


model = build()
plain = copy.deepcopy(model)
units = shard(model)
_, tokenizer = load_causal_lm(str(model_dir))
venv = gym.make_vec("rlm/Sentiment-v0", num_envs=3)
# The ranks run different numbers of decoding steps: a per-layer gather would wait forever.
generation = GenerationSettings(max_new_tokens=12 - 5 * rank)
with full_weights(model):
    episodes = collect_episodes(
        model, tokenizer, venv, generation=generation, prompt_format=PlainFormat(), seed=10 * rank
    )
    scored = score_episodes(model, episodes, micro_batch_size=2, temperature=1.0)
expected = score_episodes(plain, episodes, micro_batch_size=2, temperature=1.0)
report = {
    "units": len(units),
    "sharded": is_sharded(model),
    "generated": int(episodes.action_mask.sum()),
    "logprobs_match": bool(torch.allclose(scored.logprobs, expected.logprobs, atol=1e-5)),
    "reference_matches": bool(
        torch.allclose(scored.ref_logprobs, expected.ref_logprobs, atol=1e-5)
    ),
    "values_match": bool(torch.allclose(scored.values, expected.values, atol=1e-6)),
}

# One update: the policy's and the value head's gradients, reduced over the ranks.
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
out = model(episodes.input_ids, episodes.attention_mask, episodes.response_start)
loss = -(out.logprobs * episodes.action_mask).mean() + (out.values**2).mean()
loss.backward()
optimizer.step()
scheduler.step()
trained = whole_state_dict(model)  # whole on rank 0

# The checkpoint, loaded into a second sharded model and optimizer.
folder = out_dir / "checkpoint"
save_training_state(state, model, optimizer, scheduler, folder)
restored = build()
shard(restored)
restored_optimizer = torch.optim.AdamW(
    [p for p in restored.parameters() if p.requires_grad], lr=1e-2
)
restored_scheduler = torch.optim.lr_scheduler.LambdaLR(restored_optimizer, lambda _: 1.0)
load_training_state(state, restored, restored_optimizer, restored_scheduler, folder)
again = whole_state_dict(restored)
with full_weights(model), full_weights(restored):
    a = score_episodes(model, episodes, micro_batch_size=3, temperature=1.0)
    b = score_episodes(restored, episodes, micro_batch_size=3, temperature=1.0)
report["restored_scores_match"] = bool(torch.equal(a.logprobs, b.logprobs))
saved_steps = [int(s["step"]) for s in restored_optimizer.state_dict()["state"].values()]
report["restored_optimizer_steps"] = sorted(set(saved_steps))
if rank == 0:
    report["trained_changed"] = any(
        not torch.equal(trained[k], v) for k, v in plain.state_dict().items() if k in trained
    )
    report["restored_weights_match"] = sorted(trained) == sorted(again) and all(
        torch.equal(trained[k], again[k]) for k in trained
    )
    # The policy's folder (the adapter, or the whole model) loads as a finished run's does.
    if kind == "lora":
        base, _ = load_causal_lm(str(model_dir))
        loaded = PeftModel.from_pretrained(base, str(folder / "policy"))
    else:
        loaded = AutoModelForCausalLM.from_pretrained(str(folder / "policy"))
    reloaded = ActorCritic(loaded)
    head = {k.removeprefix("value_head."): v for k, v in trained.items() if "value_head" in k}
    reloaded.value_head.load_state_dict(head)
    c = score_episodes(reloaded, episodes, micro_batch_size=3, temperature=1.0)
    report["saved_policy_matches"] = bool(torch.allclose(c.logprobs, a.logprobs, atol=1e-5))
(out_dir / f"rank_{rank}.json").write_text(json.dumps(report))
state.wait_for_everyone()
dist.destroy_process_group()  # before exit: gloo's threads end cleanly
