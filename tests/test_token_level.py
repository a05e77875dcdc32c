"""The token-level view and stable-baselines3: environments, the LM policy, the experiment.

The token view replays sequence-level episodes to the same tokens and rewards; the
policy's log-probs are the LM's log-softmax under the mask; the KL penalty reaches SB3's
buffer; short PPO, A2C and NLPO runs train and log; a resumed NLPO run ends as the
uninterrupted one. (Every registered environment's token view passes SB3's checker in
tests/test_env_catalogue.py.)

Run: ``python -m pytest tests/test_token_level.py -q``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from accelerate import PartialState
from safetensors.torch import load_file
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import envs  # noqa: F401  (registers the rlm/ environments)
from rlm.env import TextVectorEnv
from rlm.models import load_causal_lm
from rlm.policy import ActorCritic, LoraSettings, add_lora
from rlm.ppo_learner import Optimization
from rlm.rollout import (
    GenerationSettings,
    collect_episodes,
    make_prompt_format,
    resolve_prompt_format,
)
from rlm.sb3_learner import SB3Settings, TokenLearner
from rlm.token_env import TokenEnv
from rlm.token_policy import LMActorCriticPolicy, MaskableLMActorCriticPolicy, TopPMasker
from tests.helpers import (
    assert_diagnostics_logged,
    computed_metrics,
    load_experiment,
    load_script,
    metrics_of,
    only_run,
    run_tiny,
    tiny_run,
)


def lora_policy(path: Path, seed: int = 0) -> tuple[ActorCritic, Any]:
    """A LoRA actor-critic whose adapter is not zero (so that it differs from its
    reference), and its tokenizer."""
    torch.manual_seed(seed)
    model, tokenizer = load_causal_lm(str(path))
    actor_critic = ActorCritic(add_lora(model, LoraSettings(r=4)))
    with torch.no_grad():
        for name, parameter in actor_critic.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    return actor_critic, tokenizer


# --- the environment -----------------------------------------------------------------


@pytest.mark.parametrize("env_id", ["rlm/Sentiment-v0", "rlm/GuessNumber-v0"])
def test_the_token_view_replays_a_sequence_level_episode(env_id, tiny_model_path):
    """Episodes sampled by rlm's rollout path, fed token by token to the token view, give
    the same contexts (prompt, completions, the environment's replies), completions and
    rewards; each reward arrives on its turn's last token and nowhere else."""
    actor_critic, tokenizer = lora_policy(tiny_model_path)
    generation = GenerationSettings(max_new_tokens=5)
    vector = gym.make_vec(env_id, num_envs=3)
    assert isinstance(vector, TextVectorEnv)
    kind = resolve_prompt_format("auto", tokenizer, conversational=vector.envs[0].conversational)
    prompt_format = make_prompt_format(kind, tokenizer)
    episodes = collect_episodes(
        actor_critic, tokenizer, vector, generation=generation, prompt_format=prompt_format,
        seed=7,
    )  # fmt: skip
    turns_seen = 0
    for i in range(len(episodes)):
        view = TokenEnv(
            gym.make(env_id).unwrapped, tokenizer, max_new_tokens=generation.max_new_tokens,
            prompt_format=prompt_format, max_length=512,
        )  # fmt: skip
        view.reset(seed=7 + i)  # the vector env seeds its env i with seed + i
        prompt = episodes.input_ids[i, : episodes.response_start]
        prompt = prompt[episodes.attention_mask[i, : episodes.response_start].bool()].tolist()
        assert view.context_ids == prompt
        response = episodes.input_ids[i, episodes.response_start :]
        actions = episodes.action_mask[i].bool()
        expected_rewards = iter(episodes.rewards[i])
        expected_completions = iter(episodes.completions[i])
        done = False
        for position in range(int(episodes.attention_mask[i, episodes.response_start :].sum())):
            if not actions[position]:
                continue  # the environment's reply: the view appends it itself
            _, reward, terminated, truncated, info = view.step(int(response[position]))
            turn_ended = "completion" in info
            if turn_ended:
                turns_seen += 1
                assert reward == next(expected_rewards)
                assert info["completion"] == next(expected_completions)
            else:
                assert reward == 0.0
            assert not truncated  # out of turns is the game's end: not bootstrapped
            done = terminated
        assert done and next(expected_rewards, None) is None
        length = episodes.response_start + int(
            episodes.attention_mask[i, episodes.response_start :].sum()
        )
        kept = episodes.attention_mask[i, :length].bool()
        assert view.context_ids == episodes.input_ids[i, :length][kept].tolist()
    assert turns_seen > len(episodes) or env_id == "rlm/Sentiment-v0"


def test_a_long_context_keeps_its_last_tokens(tiny_model_path):
    _, tokenizer = lora_policy(tiny_model_path)
    env = gym.make("rlm/Sentiment-v0").unwrapped
    short = TokenEnv(env, tokenizer, max_length=64)
    obs, info = short.reset(seed=0)
    length = len(short.context_ids)
    assert 4 < length < 64 and not info["context_cut"]
    assert obs["attention_mask"].tolist() == [0] * (64 - length) + [1] * length
    assert obs["input_ids"][64 - length :].tolist() == short.context_ids
    cut = TokenEnv(env, tokenizer, max_length=4)
    cut.reset(seed=0)
    obs, *_, info = cut.step(100)
    assert cut.context_ids[-1] == 100 and len(cut.context_ids) == length + 1
    assert obs["input_ids"].tolist() == cut.context_ids[-4:]
    assert obs["attention_mask"].tolist() == [1, 1, 1, 1] and info["context_cut"]


# --- the policy ----------------------------------------------------------------------


def test_policy_log_probs_are_the_lms_log_softmax_under_the_mask(tiny_gpt2_path):
    """On left-padded contexts of different lengths (GPT-2: absolute positions, so wrong
    padding would show), the policies' log-probs, entropy and values equal the LM's own
    on each unpadded context; NLPO's mask is the top-p nucleus of the masking copy."""
    actor_critic, tokenizer = lora_policy(tiny_gpt2_path)
    view = TokenEnv(gym.make("rlm/Sentiment-v0").unwrapped, tokenizer, max_length=24)
    contexts = [[5, 17, 300, 42, 9], [61, 2000], [8, 8, 8, 8, 1000, 77, 5, 4]]
    width = view.max_length
    obs = {
        "input_ids": torch.tensor([[0] * (width - len(c)) + c for c in contexts]).float(),
        "attention_mask": torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts]),
    }
    actions = torch.tensor([3, 40000, 123])
    temperature = 0.7
    masker = TopPMasker(actor_critic, top_p=0.3, temperature=temperature)
    lm = actor_critic.policy
    with torch.no_grad():
        own = [lm(torch.tensor([c])).logits[0, -1] / temperature for c in contexts]
        own_values = [
            actor_critic.value_head(
                lm.get_decoder()(input_ids=torch.tensor([c])).last_hidden_state[0, -1]
            ).item()
            for c in contexts
        ]
    masks = masker.masks(obs["input_ids"].long(), obs["attention_mask"])
    # The nucleus: the fewest most likely tokens holding at least top_p of the mass.
    for row, logits in enumerate(own):
        probs = torch.softmax(logits, -1)
        kept = probs[masks[row]].sort().values
        assert kept.sum() >= 0.3 > kept[1:].sum()
        assert probs[~masks[row]].max() <= kept.min()
    masks[:, actions] = True  # the sampled tokens are inside the mask
    schedule = lambda _: 1e-3  # noqa: E731
    spaces = (view.observation_space, view.action_space, schedule)
    plain = LMActorCriticPolicy(*spaces, actor_critic=actor_critic, temperature=temperature)
    masked = MaskableLMActorCriticPolicy(
        *spaces, actor_critic=actor_critic, temperature=temperature
    )
    with torch.no_grad():
        values, logprobs, entropy = plain.evaluate_actions(obs, actions)
        _, masked_logprobs, masked_entropy = masked.evaluate_actions(
            obs, actions, action_masks=masks.numpy()
        )
    for row, logits in enumerate(own):
        expected = torch.log_softmax(logits, -1)
        assert logprobs[row].item() == pytest.approx(expected[actions[row]].item(), abs=1e-4)
        assert entropy[row].item() == pytest.approx(
            -(expected.exp() * expected).sum().item(), abs=1e-4
        )
        assert values[row].item() == pytest.approx(own_values[row], abs=1e-5)
        under_mask = torch.log_softmax(logits.masked_fill(~masks[row], float("-inf")), -1)
        assert masked_logprobs[row].item() == pytest.approx(
            under_mask[actions[row]].item(), abs=1e-4
        )
        inside = under_mask[masks[row]]
        assert masked_entropy[row].item() == pytest.approx(
            -(inside.exp() * inside).sum().item(), abs=1e-4
        )
    assert (masked_logprobs > logprobs).all()  # the mask moves the mass onto fewer tokens


def test_the_kl_penalty_is_subtracted_from_each_tokens_reward(tiny_model_path):
    """Two learners from the same weights and seed, with and without a KL penalty, store
    the same rollout in SB3's buffer, whose rewards then differ by kl_coef times each
    token's log p - log q (the reference: the adapter turned off)."""
    buffers = {}
    for kl_coef in (0.0, 0.5):
        actor_critic, tokenizer = lora_policy(tiny_model_path)
        text_envs = [gym.make("rlm/Sentiment-v0").unwrapped for _ in range(2)]
        learner = TokenLearner(
            actor_critic, tokenizer, text_envs,
            SB3Settings(n_steps=8, minibatch_size=16, kl_coef=kl_coef),
            optimization=Optimization(lr=1e-3, total_steps=1),
            generation=GenerationSettings(max_new_tokens=3),
            prompt_format=make_prompt_format("plain", tokenizer), seed=3, state=PartialState(),
        )  # fmt: skip
        torch.manual_seed(3)
        result = learner.step(iteration=0)
        buffer = learner.model.rollout_buffer
        buffers[kl_coef] = {
            "rewards": buffer.rewards.copy(), "actions": buffer.actions.copy(),
            "log_probs": buffer.log_probs.copy(),
            "obs": {k: v.copy() for k, v in buffer.observations.items()},
        }  # fmt: skip
        learner.close()
    off, on = buffers[0.0], buffers[0.5]
    np.testing.assert_array_equal(off["actions"], on["actions"])
    np.testing.assert_array_equal(off["obs"]["input_ids"], on["obs"]["input_ids"])
    assert result.metrics["train/kl"] != 0
    actor_critic, _ = lora_policy(tiny_model_path)  # the weights the rollouts started from
    ids = torch.tensor(on["obs"]["input_ids"].reshape(-1, 256)).long()
    mask = torch.tensor(on["obs"]["attention_mask"].reshape(-1, 256)).long()
    with torch.no_grad(), actor_critic.as_reference() as reference:
        ref = [
            torch.log_softmax(reference(ids[[n]][:, mask[n].bool()]).logits[0, -1], -1)
            for n in range(len(ids))
        ]
    taken = on["actions"].reshape(-1).astype(int)
    kl = np.array(
        [on["log_probs"].reshape(-1)[n] - ref[n][taken[n]].item() for n in range(len(ids))]
    )
    # (SB3's update flattened the buffer's other arrays env by env; rewards stay [step, env].)
    np.testing.assert_allclose(
        (off["rewards"] - on["rewards"]).T.reshape(-1), 0.5 * kl, rtol=1e-4, atol=1e-5
    )
    assert np.abs(kl).max() > 0.01


def test_activation_checkpointing_recomputes_the_layers_and_trains_the_same(tiny_model_path):
    """With activation checkpointing, A2C's one update runs each decoder layer again in
    its backward pass (the activations were not kept), and trains the same weights."""
    layer_calls, trained = {}, {}
    for checkpointing in (False, True):
        actor_critic, tokenizer = lora_policy(tiny_model_path)
        if checkpointing:
            actor_critic.checkpoint_activations()
        learner = TokenLearner(
            actor_critic, tokenizer, [gym.make("rlm/Sentiment-v0").unwrapped for _ in range(2)],
            SB3Settings(algo="a2c", n_steps=8),
            optimization=Optimization(lr=1e-3, total_steps=1),
            generation=GenerationSettings(max_new_tokens=3),
            prompt_format=make_prompt_format("plain", tokenizer), seed=3, state=PartialState(),
        )  # fmt: skip
        calls: list[int] = []
        # (A layer's part: the layer's own forward is what checkpointing wraps.)
        mlp = actor_critic.policy.get_decoder().layers[0].mlp
        hook = mlp.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        torch.manual_seed(3)
        learner.step(iteration=0)
        hook.remove()
        learner.close()
        layer_calls[checkpointing] = len(calls)
        trained[checkpointing] = {
            name: p.detach().clone()
            for name, p in actor_critic.named_parameters()
            if p.requires_grad
        }
    # The rollout: the policy's and the reference's pass per token and one for the last
    # values; the update: one pass, and with checkpointing its recomputation.
    assert layer_calls == {False: 2 * 8 + 1 + 1, True: 2 * 8 + 1 + 2}
    for name, weight in trained[True].items():
        torch.testing.assert_close(weight, trained[False][name], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(trained[True][n], p) for n, p in lora_policy(tiny_model_path)[0]
               .named_parameters() if p.requires_grad)  # fmt: skip


# --- the experiment ------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["ppo", "a2c", "nlpo"])
def test_a_short_run_trains_the_adapter_and_logs(algo, tiny_model_path, tmp_path):
    run = tiny_run("sb3", tiny_model_path, tmp_path, "--algo", algo, "--mask-refresh-every", "2")
    rows = metrics_of(run)
    train_rows = [row for row in rows if "train/policy_loss" in row]
    assert [row["step"] for row in train_rows] == [1, 2, 3, 4]
    for key in ("reward/mean", "train/value_loss", "train/entropy", "train/kl", "train/lr",
                "perf/time_rollout", "perf/time_update", "perf/tokens"):  # fmt: skip
        assert all(key in row for row in train_rows), key
    assert rows[-1]["perf/tokens"] == 4 * 4 * 8  # steps x environments x n_steps
    assert ("perf/time_mask" in train_rows[0]) == (algo == "nlpo")
    assert_diagnostics_logged(run)
    adapter = load_file(run / "policy" / "adapter_model.safetensors")
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)
    assert run.name.split("__")[1] == f"sb3-{algo}"
    assert list((run / "tb").glob("events.out.tfevents.*"))


def test_nlpo_resumed_ends_as_the_straight_run(tiny_model_path, tmp_path):
    """Stopped after step 2 (just after the masking policy's refresh), resumed: the same
    metrics and weights as the run that was not stopped; the checkpoint holds the masking
    policy as refreshed (the trained adapter of that step)."""
    flags = ["--algo", "nlpo", "--mask-refresh-every", "2"]
    straight = tiny_run("sb3", tiny_model_path, tmp_path / "straight", *flags)
    first = run_tiny("sb3", tiny_model_path, tmp_path / "stopped", *flags, "--stop-after", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    run = only_run(tmp_path / "stopped")
    checkpoint = run / "checkpoints" / "checkpoint-2"
    trained = load_file(checkpoint / "trainable.safetensors")
    masking = load_file(checkpoint / "masking.safetensors")
    assert masking and all(torch.equal(masking[k], trained[f"policy.{k}"]) for k in masking)
    resumed = load_experiment("sb3").cli(["--resume", str(run)])
    assert resumed == 0
    assert computed_metrics(run) == computed_metrics(straight)
    a = load_file(run / "policy" / "adapter_model.safetensors")
    b = load_file(straight / "policy" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sb3_vector_environments_in_processes_play_as_in_one(tiny_model_path):
    """SB3's SubprocVecEnv (each token view in its own process) and DummyVecEnv give the
    same observations, rewards and ends for the same seeds and actions."""
    _, tokenizer = lora_policy(tiny_model_path)

    def factories():
        return [
            lambda: TokenEnv(
                gym.make("rlm/Arithmetic-v0").unwrapped, tokenizer, max_new_tokens=3, max_length=64
            )  # fmt: skip
            for _ in range(2)
        ]

    played = []
    for vector in (DummyVecEnv(factories()), SubprocVecEnv(factories(), start_method="fork")):
        vector.seed(5)
        steps = [vector.reset()]
        for token in (101, 2000, 7, 7, 300, 12):
            steps.append(vector.step(np.array([token, token + 1])))
        vector.close()
        played.append(steps)
    np.testing.assert_equal(played[0], played[1])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--top-p", "0.9"], "leave --top-k and --top-p off"),
        (["--n-steps", "4", "--max-new-tokens", "6"], "shorter than a turn"),
        (["--n-steps", "24", "--batch-size", "3", "--minibatch-size", "16"], "must divide"),
        (["--mask-top-p", "0"], "--mask-top-p must be in (0, 1]"),
    ],
)
def test_settings_it_cannot_run_are_one_line_errors(flags, message, capsys, tmp_path):
    sb3 = load_experiment("sb3")
    assert sb3.cli([*flags, "--output-dir", str(tmp_path), "--wandb", "disabled"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_the_benchmark_prints_both_paths_side_by_side(tiny_model_path, capsys):
    benchmark = load_script("benchmark_token_level")
    benchmark.main(benchmark.Config(model=str(tiny_model_path), batch_size=2,
                                    max_new_tokens=3, repeats=1))  # fmt: skip
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0] for row in rows[1:]] == [
        "| sequence-level PPO (rlm)", "| token-level PPO (SB3)",
    ]  # fmt: skip
    assert rows[2].split(" | ")[1] == "6"  # 2 environments x 3 tokens
    assert "x the step time per token" in out
