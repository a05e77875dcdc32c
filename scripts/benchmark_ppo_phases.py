"""Time each phase of a PPO iteration on the default model and print a table.

    python scripts/benchmark_ppo_phases.py                         # batch sizes 8 16 32
    python scripts/benchmark_ppo_phases.py --batch-sizes 16 --max-new-tokens 32 --threads 1
    python scripts/benchmark_ppo_phases.py --model /path/to/model --env-id rlm/GuessNumber-v0

Each batch size runs one untimed warm-up iteration, then ``--repeats`` timed ones, through
the same functions the experiment uses: generation (KV cache) and scoring by the
environment (``collect_episodes``), the policy, reference and value forward passes
(``score_episodes``), and the PPO update (``ppo_update``, 2 epochs x 2 minibatches by
default). Times are medians over the repeats, in seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from accelerate import Accelerator

import envs  # noqa: F401  (registers the environments)
from rlm.env import make_text_vector_env
from rlm.models import load_causal_lm
from rlm.policy import ActorCritic, LoraSettings, add_lora
from rlm.ppo_update import PPOSettings, compute_advantages, ppo_update
from rlm.rollout import GenerationSettings, collect_episodes, make_prompt_format, score_episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--env-id", default="rlm/Sentiment-v0")
    parser.add_argument("--prompt-format", default="plain", choices=["plain", "chat"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    policy, tokenizer = load_causal_lm(args.model)
    actor_critic = ActorCritic(add_lora(policy, LoraSettings())).to(accelerator.device)
    optimizer = torch.optim.AdamW([p for p in actor_critic.parameters() if p.requires_grad], 1e-4)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0)
    model, optimizer = accelerator.prepare(actor_critic, optimizer)
    settings = PPOSettings()
    prompt_format = make_prompt_format(args.prompt_format, tokenizer)
    generation = GenerationSettings(max_new_tokens=args.max_new_tokens)

    header = (
        "| batch | tokens | generate s | tokens/s | env reward s | forward s | update s "
        "| iteration s | generate share |"
    )
    print(f"model {args.model}, {torch.get_num_threads()} threads, device {accelerator.device}")
    print(header)
    print("| --- " * 9 + "|")
    for batch in args.batch_sizes:
        venv = make_text_vector_env(args.env_id, batch, split="train")
        rows: dict[str, list[float]] = {k: [] for k in ["gen", "score", "fwd", "upd", "tok"]}
        for repeat in range(args.repeats + 1):
            episodes = collect_episodes(
                actor_critic, tokenizer, venv, generation=generation,
                prompt_format=prompt_format, seed=repeat * batch,
            )  # fmt: skip
            score_episodes(
                actor_critic, episodes, micro_batch_size=batch // settings.minibatches,
                temperature=1.0,
            )  # fmt: skip
            advantages = compute_advantages(episodes, settings.kl_coef, settings)
            start = time.perf_counter()
            ppo_update(accelerator, model, optimizer, scheduler, episodes, advantages, settings,
                       temperature=1.0)  # fmt: skip
            update = time.perf_counter() - start
            if repeat == 0:
                continue  # warm-up
            rows["gen"].append(episodes.timings["generate"])
            rows["score"].append(episodes.timings["score"])
            rows["fwd"].append(episodes.timings["forward"])
            rows["upd"].append(update)
            rows["tok"].append(float(episodes.action_mask.sum()))
        med = {k: statistics.median(v) for k, v in rows.items()}
        total = med["gen"] + med["score"] + med["fwd"] + med["upd"]
        print(
            f"| {batch} | {med['tok']:.0f} | {med['gen']:.2f} | {med['tok'] / med['gen']:.0f} "
            f"| {med['score']:.3f} | {med['fwd']:.2f} | {med['upd']:.2f} | {total:.2f} "
            f"| {med['gen'] / total:.0%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
