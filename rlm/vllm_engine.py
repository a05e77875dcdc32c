"""PPO's rollouts sampled by a vLLM engine on the training GPUs (``--use-vllm``; install
with ``pip install -e '.[vllm]'``).

The engine runs in the training process, next to the policy ("colocated"), loaded from the
run's start model. After every update the policy's weights are stale in it: before the
next sample, :class:`VLLMSampler` pushes them (:func:`engine_weights`: with LoRA, each
adapted weight merged, without changing the policy) and clears the engine's prefix cache.
It returns token ids only; the rollout assembles the episodes from them, and the training
model recomputes the sampled tokens' log-probs, so everything after generation is the
same as with transformers' ``generate``.

Example:
    >>> sampler = VLLMSampler.for_model("default", seed=1)  # doctest: +SKIP
    >>> sampler.policy_updated()  # doctest: +SKIP
    >>> sampler.sync(actor_critic.policy)  # doctest: +SKIP  (pushes the weights once)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel

from rlm.errors import ConfigError

if TYPE_CHECKING:
    from rlm.rollout import GenerationSettings

WeightLoader = Callable[[Iterable[tuple[str, torch.Tensor]]], None]
"""Takes (name, tensor) pairs under the base model's checkpoint names."""


def check_vllm_available(has_gpu: bool | None = None) -> None:
    """Raise :class:`ConfigError` where ``--use-vllm`` cannot run: no vLLM, or no GPU."""
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("--use-vllm needs vLLM: pip install -e '.[vllm]' (on a GPU machine)")
    has_gpu = torch.cuda.is_available() if has_gpu is None else has_gpu
    if not has_gpu:
        raise ConfigError("--use-vllm needs a GPU: vLLM's engine here runs on CUDA")


def engine_weights(policy: PreTrainedModel | PeftModel) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's weights under the names of its base model's checkpoint, which is
    what an engine loaded from that checkpoint reads: a LoRA-adapted weight is yielded
    merged (base plus the adapter's delta, computed apart: the policy is not changed).

    A sharded policy must be inside :func:`rlm.sharding.full_weights`.
    """
    if not isinstance(policy, PeftModel):
        for name, param in policy.named_parameters():
            yield name, param.detach()
        return
    base = policy.get_base_model()
    adapter = policy.active_adapter
    for name, param in base.named_parameters():
        if ".lora_" in name:
            continue  # merged into the weight it adapts
        if ".base_layer." not in name:
            yield name, param.detach()
            continue
        owner, _, leaf = name.rpartition(".base_layer.")
        layer = base.get_submodule(owner)
        assert isinstance(layer, LoraLayer)
        tensor = param.detach()
        if leaf == "weight" and adapter in layer.lora_A and not layer.disable_adapters:
            # (every LoRA layer kind has it; the base class does not declare it)
            delta = cast(Any, layer).get_delta_weight(adapter)
            tensor = tensor + delta.to(tensor.dtype)
        yield f"{owner}.{leaf}", tensor


class VLLMSampler:
    """Samples with a vLLM engine and keeps its weights those of the policy.

    Args:
        llm: a ``vllm.LLM`` (or anything with its ``generate`` and ``reset_prefix_cache``).
        load_weights: pushes (name, tensor) pairs into the engine's model.
    """

    def __init__(self, llm: Any, load_weights: WeightLoader) -> None:
        self.llm = llm
        self.load_weights = load_weights
        self.stale = False
        """Whether the policy changed since the engine last got its weights."""
        self.syncs = 0
        """How many times the weights were pushed."""

    @classmethod
    def for_model(
        cls, model: str, *, seed: int, gpu_memory_utilization: float = 0.3, dtype: str = "auto"
    ) -> VLLMSampler:
        """An engine on this process's GPU, loaded from ``model`` (a folder or Hub id)."""
        from vllm import LLM

        llm = LLM(
            model=model, seed=seed, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
            # In the training process, one engine per process (torchrun's ranks).
            distributed_executor_backend="external_launcher",
        )  # fmt: skip

        def load(weights: Iterable[tuple[str, torch.Tensor]]) -> None:
            runner = llm.llm_engine.model_executor.driver_worker.model_runner
            runner.model.load_weights(weights)

        return cls(llm, load)

    def policy_updated(self) -> None:
        """The policy's weights changed (an update): push them before the next sample."""
        self.stale = True

    def sync(self, policy: PreTrainedModel | PeftModel) -> None:
        """Push the policy's weights if they changed since the last push."""
        if not self.stale:
            return
        with torch.no_grad():
            self.load_weights(engine_weights(policy))
        self.llm.reset_prefix_cache()  # cached prompts were computed with the old weights
        self.stale = False
        self.syncs += 1

    def sample(
        self,
        contexts: list[list[int]],
        generation: GenerationSettings,
        *,
        eos_ids: set[int],
        pad_id: int,
    ) -> list[list[int]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=1, max_tokens=generation.max_new_tokens, temperature=generation.temperature,
            top_p=generation.top_p, top_k=generation.top_k or -1,
            stop_token_ids=sorted(eos_ids), skip_special_tokens=False,
        )  # fmt: skip
        prompts = [{"prompt_token_ids": ids} for ids in contexts]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [list(output.outputs[0].token_ids) for output in outputs]
