"""Shared fixtures: offline settings, one CPU thread, and the tiny test models.

The tiny model is a random 2-layer Llama with the default model's real tokenizer
(:func:`rlm.models.build_tiny_model`); it is built once into the rlm cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# No model hub is reachable in tests, and tokenizer threads only fight the training threads.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Tiny models thrash with more than one thread on these CPUs.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """A folder with the tiny random Llama and the default model's tokenizer."""
    import rlm.models

    return rlm.models.build_tiny_model(rlm.models.cache_dir() / "tiny-llama-test")


@pytest.fixture(scope="session")
def tiny_gpt2_path(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer GPT-2 with the same tokenizer.

    Llama's rotary positions are relative: shifting every position of a row by the same
    amount changes nothing, so it cannot tell whether left padding was skipped. GPT-2's
    learned absolute position embeddings can.
    """
    from transformers import AutoModelForCausalLM, GPT2Config

    from rlm.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_path)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    target = tmp_path_factory.mktemp("tiny-gpt2")
    AutoModelForCausalLM.from_config(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
