"""Rewards by name: build any scorer, or a weighted sum of them, from one string.

This is what ``--reward`` and ``--heldout-reward`` in the experiments take::

    vader                                   one scorer, default options
    textblob
    similarity:target=a warm thank-you note  options after ':' as key=value, comma-separated
    0.7*vader + 0.3*repetition:n=2          a weighted composite, each part logged
    env + 0.5*unfinished                    the environment's own reward plus a rule
    runs/reward_models/lstm                 a trained reward-model folder (by path)
    model:path=runs/rm,label=negative       the same, with options
    my_rewards:brevity                      your own reward: module:attribute
    0.5*vader + 0.5*my_rewards:brevity      ... which may be a term like any other

``module:attribute`` imports ``module`` (the current directory is searched too) and takes
``attribute`` (a dotted path of names): a function or callable instance is used as is, a
class is built with no arguments. It must be a batched reward,
``(prompts, completions, **info) -> list[float]``. A scorer name, ``env`` or an existing
folder before the ``:`` is read as above instead.

A list value is written with ``|`` (``keywords:words=sun|sea``). Rewards whose options
contain ``+`` followed by a scorer name, a path or a whole ``module:attribute``, or ``,``
followed by ``key=``, need the Python API.
"""

from __future__ import annotations

import inspect
import re
import reprlib
from collections.abc import Callable
from typing import Any

from rlm.errors import ConfigError
from rlm.files import user_path
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
_DOTTED = r"[^\W\d]\w*(?:\.[^\W\d]\w*)*"  # a dotted Python name: pkg.module, Class.attr
# A term after '+' starts with a scorer name, 'env', a path, or is a whole module:attribute.
_TERM_START = (
    rf"\s*{_WEIGHT}(?:{'|'.join(list(SCORERS) + [ENV_REWARD])})\b"
    rf"|\s*{_WEIGHT}[./~]"
    rf"|\s*{_WEIGHT}{_DOTTED}:{_DOTTED}\s*(?:\+|$)"
)


def available_rewards() -> list[str]:
    """The scorer names a spec may use (besides ``env`` and a model folder path)."""
    return sorted(SCORERS)


def _split_terms(spec: str) -> list[str]:
    # Split on '+' only where a new term starts, so that regex options may contain '+'.
    return [t.strip() for t in re.split(rf"\+(?={_TERM_START})", spec) if t.strip()]


def _is_import(name: str, rest: str) -> bool:
    """Whether ``name:rest`` is ``module:attribute`` rather than a scorer with options."""
    return (
        name not in SCORERS
        and name != ENV_REWARD
        and re.fullmatch(_DOTTED, name) is not None
        and re.fullmatch(_DOTTED, rest) is not None
        and not _is_model_folder(name)
    )


def _is_model_folder(name: str) -> bool:
    """A folder that is not a Python package: a reward model named by its path."""
    folder = user_path(name)
    return folder.is_dir() and not (folder / "__init__.py").is_file()


def _parse_term(term: str) -> tuple[float, str, dict[str, str]]:
    # name is 'module:attribute' for a user's reward (the only names with a ':').
    weight = 1.0
    match = re.match(r"\s*([-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?)\s*\*\s*(.*)$", term, re.DOTALL)
    if match:
        weight, term = float(match.group(1)), match.group(2)
    name, _, rest = (part.strip() for part in term.partition(":"))
    if _is_import(name, rest):
        return weight, f"{name}:{rest}", {}
    options: dict[str, str] = {}
    if rest:
        for item in re.split(r",(?=\s*\w+\s*=)", rest):
            key, eq, value = item.partition("=")
            if not eq:
                raise ConfigError(f"reward option {item!r} in {term!r} is not key=value")
            options[key.strip()] = value.strip()
    return weight, name, options


def _import_reward(spec: str) -> RewardFunction:
    """The batched callable that ``module:attribute`` names (a class is instantiated)."""
    from rlm.env import import_from_cwd

    module_name, attribute = spec.split(":")
    try:
        module = import_from_cwd(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if (
            isinstance(exc, ModuleNotFoundError)
            and missing is not None
            and (module_name == missing or module_name.startswith(f"{missing}."))
        ):
            raise ConfigError(
                f"reward {spec!r}: no module named {module_name!r}; run from the folder that "
                f"holds {module_name.replace('.', '/')}.py, or put it on PYTHONPATH"
            ) from None
        message = str(exc).replace("\n", " ")
        raise ConfigError(
            f"reward {spec!r}: importing module {module_name!r} failed: {message}"
        ) from exc
    obj: Any = module
    for i, part in enumerate(attribute.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = ".".join([module_name, *attribute.split(".")[:i]])
            raise ConfigError(
                f"reward {spec!r}: {owner!r} has no attribute {part!r}; define it there "
                "or fix the name after the ':'"
            ) from None
    expected = (
        "expected a batched reward (prompts, completions, **info) -> list[float]: "
        "a function, a callable instance, or a class with __call__ built with no arguments"
    )
    if inspect.isclass(obj):
        try:
            inspect.signature(obj).bind()
        except TypeError as exc:
            raise ConfigError(
                f"reward {spec!r}: class {obj.__name__} cannot be built with no arguments "
                f"({exc}); give its arguments defaults, or name an instance of it"
            ) from None
        except ValueError:  # no signature to check (a builtin): just try it
            pass
        cls_name = obj.__name__
        obj = obj()
        if not callable(obj):
            raise ConfigError(
                f"reward {spec!r}: instances of class {cls_name} are not callable "
                f"(no __call__); {expected}"
            )
    elif not callable(obj):
        found = f"{type(obj).__name__} {reprlib.repr(obj)}".replace("\n", " ")
        raise ConfigError(f"reward {spec!r} is not callable (found {found}); {expected}")
    return obj


def _build(name: str, options: dict[str, str], env_reward: RewardFunction | None) -> RewardFunction:
    if ":" in name:
        return _import_reward(name)
    if name == ENV_REWARD:
        if env_reward is None:
            raise ConfigError("reward 'env' names the environment's reward, but none is at hand")
        if options:
            raise ConfigError("reward 'env' takes no options")
        return env_reward
    if name not in SCORERS:
        if user_path(name).is_dir():  # a reward-model folder, named by its path
            options = {"path": name, **options}
            name = "model"
        else:
            raise ConfigError(
                f"unknown reward {name!r}: use one of {', '.join(available_rewards())}, "
                f"'{ENV_REWARD}', module:attribute for your own, or the path of a "
                f"reward-model folder (no folder {name!r} exists)"
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
        ConfigError: an unknown name or option, a malformed spec, or a ``module:attribute``
            that cannot be imported or is not callable.
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
