"""rlm's draw of the next token (:func:`rlm.samplers.draw`) and the processor that makes
transformers' ``generate`` sample with it.

Run: ``python -m pytest tests/test_samplers.py -q``
"""

from __future__ import annotations

import pytest
import torch

from rlm.errors import DivergedError
from rlm.rollout import GenerationSettings
from rlm.samplers import SampleFromLogits, draw

LOGITS = torch.tensor([2.0, 1.0, 0.0, -1.0, -float("inf"), -3.0])


def test_tokens_are_drawn_as_often_as_their_probability():
    torch.manual_seed(0)
    draws = 200_000
    tokens = draw(LOGITS.repeat(draws, 1))
    counts = torch.bincount(tokens, minlength=len(LOGITS)).double()
    probabilities = torch.softmax(LOGITS.double(), -1)
    # Each count within 5 standard deviations of its expectation (binomial).
    spread = (draws * probabilities * (1 - probabilities)).sqrt()
    assert ((counts - draws * probabilities).abs() <= 5 * spread + 1e-9).all()
    assert counts[4] == 0  # a -inf logit is never drawn
    assert counts[5] > 0  # an unlikely one is (p = 0.0021)


def test_the_draw_follows_the_global_generator():
    torch.manual_seed(3)
    first = draw(LOGITS.repeat(64, 1))
    torch.manual_seed(3)
    assert torch.equal(draw(LOGITS.repeat(64, 1)), first)
    torch.manual_seed(4)  # another seed of the global generator, other tokens
    assert not torch.equal(draw(LOGITS.repeat(64, 1)), first)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_logits_that_are_not_finite_are_a_diverged_policy(bad):
    logits = LOGITS.clone().repeat(2, 1)
    logits[1, 0] = bad
    with pytest.raises(DivergedError, match="lower --lr"):
        draw(logits)


def test_the_processor_samples_after_the_warpers_and_leaves_only_the_drawn_token():
    rows = LOGITS.repeat(8, 1)
    history: list[torch.Tensor] = []
    cold = SampleFromLogits(GenerationSettings(temperature=0.5), history)
    scores = cold(torch.zeros(8, 1, dtype=torch.long), rows.clone())
    torch.testing.assert_close(history[0], rows / 0.5)
    # All the probability on one token per row: generate's argmax takes it.
    assert ((scores == 0).sum(1) == 1).all() and scores.isneginf().sum() == 8 * (len(LOGITS) - 1)
    # top-k 1 and a small top-p keep the likeliest token only: it is always drawn.
    for settings in (GenerationSettings(top_k=1), GenerationSettings(top_p=0.1)):
        scores = SampleFromLogits(settings)(torch.zeros(8, 1, dtype=torch.long), rows.clone())
        assert (scores.argmax(1) == 0).all()
    # No warper at the defaults: the logits are drawn from as they are.
    assert len(SampleFromLogits(GenerationSettings()).warpers) == 0


def test_generate_with_the_processor_samples_what_it_drew(tiny_model_path):
    from rlm.models import load_causal_lm
    from rlm.samplers import HFSampler

    model, tokenizer = load_causal_lm(str(tiny_model_path))
    sampler = HFSampler(model)
    contexts = [[1, 5, 6, 7], [1, 9]]
    settings = GenerationSettings(max_new_tokens=6)
    torch.manual_seed(0)
    first = sampler.sample(contexts, settings, eos_ids={2}, pad_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    assert sampler.sample(contexts, settings, eos_ids={2}, pad_id=tokenizer.pad_token_id) == first
    assert all(len(row) == 6 or 2 in row for row in first)
    # Sampling, not greedy decoding: other seeds give other completions.
    others = set()
    for seed in range(1, 6):
        torch.manual_seed(seed)
        others.add(str(sampler.sample(contexts, settings, eos_ids={2},
                                      pad_id=tokenizer.pad_token_id)))  # fmt: skip
    assert len(others) > 1
