"""Learned reward models: data, an LSTM baseline, transformer classifiers, preference models.

The pieces, each a small module:

- :mod:`~rlm.reward_models.data`: the labelled tweets, cleaned, deduplicated and split;
- :mod:`~rlm.reward_models.lstm` and :mod:`~rlm.reward_models.transformer`: the models;
- :mod:`~rlm.reward_models.training`: one training loop with early stopping;
- :mod:`~rlm.reward_models.metrics`: test-split metrics and tables;
- :mod:`~rlm.reward_models.preference`: preference pairs and TRL's ``RewardTrainer``;
- :mod:`~rlm.reward_models.folder` and :mod:`~rlm.reward_models.loading`: the saved folder
  and how a reward loads it (:class:`rlm.scorers.classifier.ClassifierReward`).

``scripts/train_reward_classifier.py`` and ``scripts/train_preference_reward.py`` run the
whole loop from the command line.
"""
