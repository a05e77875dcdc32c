"""Exceptions that carry a one-line message telling the user what to do.

Experiment scripts catch :class:`RlmError`, print its message and exit with status 2, so
anything raised as one of these reaches the user as a single readable line.
"""

from __future__ import annotations


class RlmError(Exception):
    """Base class: an error caused by the user's input, with a message that says what to do."""


class ConfigError(RlmError, ValueError):
    """A configuration value is missing, malformed or out of range."""


class ModelNotFoundError(RlmError, FileNotFoundError):
    """A model name or path could not be resolved to loadable weights."""


class UnknownEnvironmentError(RlmError, KeyError):
    """An environment id is not registered."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class DivergedError(RlmError, ArithmeticError):
    """Training produced non-finite numbers (losses, gradients, logits or values) step
    after step: the weights have diverged."""


class RewardError(RlmError, ValueError):
    """A reward function returned something other than one finite float per completion."""


class OutOfMemory(RlmError, MemoryError):
    """The accelerator ran out of memory; the message names the settings that need less."""


class PeerFailed(RlmError, RuntimeError):
    """Another process of a multi-process run failed, so this one stops too (the message
    names the process and its error when it left one)."""
