"""Task environments, registered under the ``rlm/`` namespace on import.

>>> import gymnasium as gym, envs
>>> env = gym.make("rlm/Sentiment-v0", split="eval")  # doctest: +SKIP
"""

from rlm.env import register_text_env

register_text_env("rlm/Sentiment-v0", "envs.sentiment:SentimentEnv")
register_text_env("rlm/GuessNumber-v0", "envs.guess_number:GuessNumberEnv")
