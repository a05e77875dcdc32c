"""Demonstrations for a supervised warm start: (prompt, completion) pairs as TRL's SFT dataset.

Demonstrations come from an environment's own data (a task that knows a good answer, or
a corpus the task is cut from: for the sentiment task, the rest of positive tweets) or
from a JSON Lines file of ``{"prompt": ..., "completion": ...}`` rows. They become a
``datasets.Dataset`` in TRL's prompt-completion format, which ``SFTTrainer`` trains on
with the loss on the completion only.

Example:
    >>> rows = [Demonstration("I love", " this song.")]
    >>> sft_dataset(rows)[0]
    {'prompt': 'I love', 'completion': ' this song.'}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from datasets import Dataset

from rlm.errors import ConfigError


@dataclass(frozen=True)
class Demonstration:
    """A prompt (the environment's observation) and a completion worth imitating."""

    prompt: str
    completion: str


def read_demonstrations(path: Path | str) -> list[Demonstration]:
    """Rows of a JSON Lines file with string ``prompt`` and ``completion`` fields.

    Raises:
        ConfigError: the file is missing, empty, or a row lacks a field.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"demonstrations file {path} does not exist")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number} is not JSON: {exc}") from None
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("completion"), str):
            raise ConfigError(
                f"{path}:{number} needs string fields 'prompt' and 'completion', got {sorted(row)}"
            )
        rows.append(Demonstration(row["prompt"], row["completion"]))
    if not rows:
        raise ConfigError(f"demonstrations file {path} holds no rows")
    return rows


def sft_dataset(
    demonstrations: Iterable[Demonstration], *, prompt_format: Literal["plain", "chat"] = "plain"
) -> Dataset:
    """TRL's prompt-completion dataset: text pairs, or one user and one assistant message.

    With ``prompt_format="chat"`` the pairs are conversations, rendered by the chat
    template as the RL scripts' ``--prompt-format chat`` renders the environment's turns.

    Raises:
        ConfigError: no demonstrations.
    """
    rows: list[dict[str, object]] = []
    for demo in demonstrations:
        if prompt_format == "chat":
            rows.append(
                {
                    "prompt": [{"role": "user", "content": demo.prompt}],
                    "completion": [{"role": "assistant", "content": demo.completion.strip()}],
                }
            )
        else:
            rows.append({"prompt": demo.prompt, "completion": demo.completion})
    if not rows:
        raise ConfigError("no demonstrations: the source gave no (prompt, completion) pair")
    return Dataset.from_list(rows)
