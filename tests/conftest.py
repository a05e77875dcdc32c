"""Shared fixtures: offline settings, one CPU thread, and the tiny test model.

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
