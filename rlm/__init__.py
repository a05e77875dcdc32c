"""rlm: reinforcement learning on language models.

Gymnasium text environments (:mod:`rlm.env`), one rollout path for every algorithm
(:mod:`rlm.rollout`), PPO (:mod:`rlm.ppo`, :mod:`rlm.ppo_update`), rewards as batched
callables on text (:mod:`rlm.rewards`), models (:mod:`rlm.models`), and run folders
with W&B, TensorBoard and JSON Lines logging (:mod:`rlm.run`, :mod:`rlm.tracking`).
"""

__version__ = "0.1.0"
