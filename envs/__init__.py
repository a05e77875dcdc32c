"""Task environments, registered under the ``rlm/`` namespace on import.

``python -m rlm list-envs`` lists them; ``python -m rlm check-env ID`` checks one.

>>> import gymnasium as gym, envs
>>> env = gym.make("rlm/Sentiment-v0", split="eval")  # doctest: +SKIP
"""

from rlm.env import register_text_env

register_text_env("rlm/Sentiment-v0", "envs.sentiment:SentimentEnv")
register_text_env("rlm/GuessNumber-v0", "envs.guess_number:GuessNumberEnv")
register_text_env("rlm/Constrained-v0", "envs.constrained:ConstrainedSentenceEnv")
register_text_env("rlm/Compress-v0", "envs.compress:CompressionEnv")
register_text_env("rlm/Search-v0", "envs.search:SearchQueryEnv")
register_text_env("rlm/Arithmetic-v0", "envs.arithmetic:ArithmeticEnv")
register_text_env("rlm/WordGuess-v0", "envs.word_guess:WordGuessEnv")
register_text_env("rlm/Recommend-v0", "envs.recommend:RecommendationEnv")
