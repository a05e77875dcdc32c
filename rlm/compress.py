"""``python -m rlm compress SOURCE --method METHOD -o OUT``: a run's policy, a model or a
reward model, compressed into a folder that loads where the source did.

The methods are in :mod:`rlm.compression`; this module reads each kind of source, writes
each kind of output, and runs the optional recovery fine-tune of a pruned policy.

Example:
    >>> compress(Path("runs/x"), Path("runs/x-int8"), Compression("int8-dynamic"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlm.compression import (
    Compression,
    apply_pruning,
    compress_pretrained,
    make_pruning_permanent,
    record,
    source_kind,
    sparsity_of,
    staging_folder,
)
from rlm.errors import ConfigError
from rlm.models import load_causal_lm
from rlm.reward_models.folder import METADATA_FILE, find_model_folder, read_metadata
from rlm.saved_runs import SavedRun


def _merged(policy: PreTrainedModel | PeftModel) -> PreTrainedModel:
    """The full model: a LoRA adapter merged into its base."""
    return policy.merge_and_unload() if isinstance(policy, PeftModel) else policy


def compress(source: Path, out: Path, compression: Compression, *, seed: int = 1) -> Path:
    """Compress ``source`` (a run, model or reward-model folder) into ``out``.

    Raises:
        ConfigError: bad options, a source of no known kind, or an existing ``out``;
            nothing is written then.
    """
    compression.validate()
    if not source.is_dir() and str(source) != "default":
        raise ConfigError(f"{source} does not exist: pass a run, model or reward-model folder")
    kind = "model" if str(source) == "default" else source_kind(source)
    if compression.recover_steps and kind != "run":
        raise ConfigError(
            "--recover-steps fine-tunes on the policy's own samples of its task: pass a run "
            "folder (it names the environment and the prompt format)"
        )
    started = time.perf_counter()
    with staging_folder(out) as staging:
        if kind == "run":
            model = _compress_run(source, staging, compression, seed)
        elif kind == "model":
            model, tokenizer = load_causal_lm(str(source))
            _compress_model(model, tokenizer, compression, staging)
        else:
            model = _compress_reward_model(source, staging, compression)
        record(staging, compression, source, measured_sparsity=sparsity_of(model),
               seconds=time.perf_counter() - started)  # fmt: skip
    return out


def _compress_model(model: PreTrainedModel, tokenizer: Any, compression: Compression,
                    folder: Path) -> None:  # fmt: skip
    if compression.method == "prune":
        make_pruning_permanent(apply_pruning(model, compression.sparsity, compression.structure))
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    else:
        compress_pretrained(model, compression, folder, tokenizer=tokenizer)


def _compress_run(source: Path, folder: Path, compression: Compression, seed: int) -> nn.Module:
    saved = SavedRun.open(source)
    policy, tokenizer = saved.load_policy()
    model = _merged(policy)
    if compression.method == "prune":
        pruned = apply_pruning(model, compression.sparsity, compression.structure)
        if compression.recover_steps:
            original, _ = saved.load_policy()
            recover(model, _merged(original), tokenizer, saved, compression, seed)
        make_pruning_permanent(pruned)
        model.save_pretrained(folder / "policy")
        tokenizer.save_pretrained(folder / "policy")
    else:
        compress_pretrained(model, compression, folder / "policy", tokenizer=tokenizer)
    for name in ("config.json", "summary.json", "meta.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)
    return model


def _compress_reward_model(source: Path, folder: Path, compression: Compression) -> nn.Module:
    from rlm.reward_models.loading import load_reward_model

    model_folder = find_model_folder(source)
    meta = read_metadata(model_folder) or {}
    loaded = load_reward_model(model_folder, device="cpu")
    if meta.get("kind") == "lstm":
        if compression.method not in ("bf16", "prune"):
            raise ConfigError(
                f"the LSTM reward model takes --method bf16 or prune: {compression.method} "
                "quantizes linear layers, and an LSTM's weights are not linear layers"
            )
        from safetensors.torch import save_file

        lstm = loaded.model
        if compression.method == "prune":
            make_pruning_permanent(apply_pruning(lstm, compression.sparsity, compression.structure))
            state = lstm.state_dict()
        else:
            state = {k: v.to(torch.bfloat16) for k, v in lstm.state_dict().items()}
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
        shutil.copy2(model_folder / "vocab.json", folder / "vocab.json")
    else:
        tokenizer = loaded.encode.tokenizer  # type: ignore[attr-defined]
        assert isinstance(loaded.model, PreTrainedModel)
        _compress_model(loaded.model, tokenizer, compression, folder)
    shutil.copy2(model_folder / METADATA_FILE, folder / METADATA_FILE)
    return loaded.model


def recover(pruned: PreTrainedModel, original: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
            saved: SavedRun, compression: Compression, seed: int) -> None:  # fmt: skip
    """Fine-tune the pruned policy (its masks in place) on the original policy's own
    completions of the run's training prompts: ``recover_steps`` SFT steps of a batch."""
    from trl import SFTConfig, SFTTrainer

    import envs  # noqa: F401  (registers the rlm/ environments)
    from rlm.demonstrations import Demonstration, sft_dataset
    from rlm.env import check_env_id, make_text_vector_env
    from rlm.policy import ActorCritic
    from rlm.rollout import (
        collect_episodes,
        make_prompt_format,
        resolve_prompt_format,
        rollout_seed,
    )
    from rlm.trl_runner import trainer_arguments

    settings = dataclasses.replace(
        saved.run_settings, steps=compression.recover_steps, lr=compression.recover_lr,
        lr_schedule="constant", seed=seed,
    )  # fmt: skip
    vector_env = make_text_vector_env(
        check_env_id(settings.env_id), settings.batch_size, split="train"
    )
    if vector_env.envs[0].multi_turn:
        raise ConfigError(
            "--recover-steps needs a single-turn task: its samples are one completion each"
        )
    kind = resolve_prompt_format(settings.prompt_format, tokenizer,
                                 conversational=vector_env.envs[0].conversational)  # fmt: skip
    sampler = ActorCritic(original, reference=original)  # generation only: no second copy
    demos: list[Demonstration] = []
    for step in range(compression.recover_steps):
        episodes = collect_episodes(
            sampler, tokenizer, vector_env, generation=settings.generation,
            prompt_format=make_prompt_format(kind, tokenizer),
            seed=rollout_seed(seed, step, 0, 1, settings.batch_size),
        )  # fmt: skip
        pairs = zip(episodes.prompts, episodes.completions, strict=True)
        demos += [Demonstration(prompt, turns[0]) for prompt, turns in pairs if turns[0].strip()]
    if not demos:
        raise ConfigError("the original policy's samples are all empty: nothing to recover on")
    pruned.requires_grad_(True)  # every weight trains (LoRA had frozen the base)
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(**trainer_arguments(settings, Path(scratch)), max_length=256)
        dataset = sft_dataset(demos, prompt_format=kind)
        trainer = SFTTrainer(pruned, args=args, train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
