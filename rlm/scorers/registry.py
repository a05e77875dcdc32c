"""Rewards by name: build any scorer, or a weighted sum of them, from one string.

This is what ``--reward`` and ``--heldout-reward`` in the experiments take::

    vader                                   one scorer, default options
    textblob
    similarity:target=a warm thank-you note  options after ':' as key=value, comma-separated
    0.7*vader + 0.3*repetition:n=2          a weighted composite, each part logged
    env + 0.5*unfinished                    the environment's own reward plus a rule
    runs/reward_models/lstm                 a trained reward-model folder (by path)
    model:path=runs/rm,label=negative       the same, with options

A list value is written with ``|`` (``keywords:words=sun|sea``). Rewards whose options
contain ``+`` followed by a name, or ``,`` followed by ``key=``, need the Python API.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlm.errors import ConfigError
from rlm.rewards import RewardFunction


def _text(value: str) -> str:
    return value


def _words(value: str) -> list[str]:
    return [w for w in value.split("|") if w]


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _vader(**kw: Any) -> RewardFunction:
    from rlm.scorers.lexicon import VaderSentiment

    return VaderSentiment(**kw)


def _textblob(**kw: Any) -> RewardFunction:
    from rlm.scorers.lexicon import TextBlobPolarity

    return TextBlobPolarity(**kw)


def _similarity(**kw: Any) -> RewardFunction:
    from rlm.scorers.similarity import SemanticSimilarity

    return SemanticSimilarity(**kw)


def _reference(kind: str) -> Callable[..., RewardFunction]:
    def build(**kw: Any) -> RewardFunction:
        from rlm.scorers import reference

        return getattr(reference, kind)(**kw)

    return build


def _rule(kind: str) -> Callable[..., RewardFunction]:
    def build(**kw: Any) -> RewardFunction:
        from rlm.scorers import rules

        return getattr(rules, kind)(**kw)

    return build


def _classifier(**kw: Any) -> RewardFunction:
    from rlm.scorers.classifier import ClassifierReward

    return ClassifierReward(**kw)


# name -> (factory, {option: parser}); the options are the factory's keyword arguments.
SCORERS: dict[str, tuple[Callable[..., RewardFunction], dict[str, Callable[[str], Any]]]] = {
    "vader": (_vader, {}),
    "textblob": (_textblob, {}),
    "similarity": (_similarity, {"target": _text, "column": _text, "model": _text}),
    "bleu": (_reference("Bleu"), {"target": _text, "column": _text}),
    "chrf": (_reference("Chrf"), {"target": _text, "column": _text}),
    "rouge": (_reference("Rouge"), {"target": _text, "column": _text, "variant": _text}),
    "regex": (_rule("RegexMatch"), {"pattern": _text, "full": _bool, "ignore_case": _bool}),
    "keywords": (_rule("KeywordsPresent"), {"words": _words, "column": _text}),
    "length": (_rule("LengthTarget"), {"target": int, "unit": _text}),
    "repetition": (_rule("RepetitionPenalty"), {"n": int}),
    "unfinished": (_rule("UnfinishedPenalty"), {"penalty": float}),
    "model": (
        _classifier,
        {
            "path": _text,
            "label": _text,
            "output": _text,
            "include_prompt": _bool,
            "max_length": int,
            "name": _text,
            "batch_size": int,
        },
    ),
}
ENV_REWARD = "env"

_WEIGHT = r"(?:[-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?\s*\*\s*)?"
_TERM_START = rf"\s*{_WEIGHT}(?:{'|'.join(list(SCORERS) + [ENV_REWARD])})\b|\s*{_WEIGHT}[./~]"


def available_rewards() -> list[str]:
    """The scorer names a spec may use (besides ``env`` and a model folder path)."""
    return sorted(SCORERS)


def _split_terms(spec: str) -> list[str]:
    # Split on '+' only where a new term starts, so that regex options may contain '+'.
    return [t.strip() for t in re.split(rf"\+(?={_TERM_START})", spec) if t.strip()]


def _parse_term(term: str) -> tuple[float, str, dict[str, str]]:
    weight = 1.0
    match = re.match(r"\s*([-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?)\s*\*\s*(.*)$", term, re.DOTALL)
    if match:
        weight, term = float(match.group(1)), match.group(2)
    name, _, rest = term.partition(":")
    options: dict[str, str] = {}
    if rest:
        for item in re.split(r",(?=\s*\w+\s*=)", rest):
            key, eq, value = item.partition("=")
            if not eq:
                raise ConfigError(f"reward option {item!r} in {term!r} is not key=value")
            options[key.strip()] = value.strip()
    return weight, name.strip(), options


def _build(name: str, options: dict[str, str], env_reward: RewardFunction | None) -> RewardFunction:
    if name == ENV_REWARD:
        if env_reward is None:
            raise ConfigError("reward 'env' names the environment's reward, but none is at hand")
        if options:
            raise ConfigError("reward 'env' takes no options")
        return env_reward
    if name not in SCORERS:
        if Path(name).expanduser().is_dir():  # a reward-model folder, named by its path
            options = {"path": name, **options}
            name = "model"
        else:
            raise ConfigError(
                f"unknown reward {name!r}: use one of {', '.join(available_rewards())}, "
                f"'{ENV_REWARD}', or the path of a reward-model folder (no folder {name!r} exists)"
            )
    factory, parsers = SCORERS[name]
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key not in parsers:
            known = ", ".join(sorted(parsers)) or "none"
            raise ConfigError(f"reward {name!r} has no option {key!r} (options: {known})")
        try:
            kwargs[key] = parsers[key](value)
        except ValueError as exc:
            raise ConfigError(f"reward {name!r} option {key}={value!r}: {exc}") from None
    try:
        return factory(**kwargs)
    except TypeError as exc:  # a required option is missing
        raise ConfigError(f"reward {name!r}: {exc}") from None


def make_reward(spec: str, env_reward: RewardFunction | None = None) -> RewardFunction:
    """Build the reward that ``spec`` describes (see the module docstring for the syntax).

    One term without a weight gives that scorer itself; anything else a
    :class:`~rlm.scorers.composite.Composite` that logs every part.

    Raises:
        ConfigError: an unknown name or option, or a malformed spec.
    """
    terms = _split_terms(spec)
    if not terms:
        raise ConfigError("empty reward spec: name a scorer, e.g. 'vader'")
    parsed = [_parse_term(t) for t in terms]
    rewards = [(weight, _build(name, options, env_reward)) for weight, name, options in parsed]
    if len(rewards) == 1 and rewards[0][0] == 1.0:
        return rewards[0][1]
    from rlm.scorers.composite import Composite

    return Composite(rewards)
