"""rlm: reinforcement learning on language models.

Gymnasium text environments (:mod:`rlm.env`), one rollout path for every algorithm
(:mod:`rlm.rollout`), PPO (:mod:`rlm.ppo`, :mod:`rlm.ppo_update`), rewards as batched
callables on text (:mod:`rlm.rewards`), models (:mod:`rlm.models`), and run folders
with W&B, TensorBoard and JSON Lines logging (:mod:`rlm.run`, :mod:`rlm.tracking`).
"""

import logging

__version__ = "0.1.0"

# torchao (for `rlm compress`) is imported by transformers' quantizers whenever peft is, and
# on a machine without its GPU kernels it logs a warning for each one it cannot load, and
# torch one for each enum it registers: nothing to act on, so not shown.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
