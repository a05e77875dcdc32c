"""Files a run writes, written so that a crash or a full disk never leaves half of one.

Whole files go to a temporary file beside the target and are renamed over it (atomic on
POSIX): a reader sees the old file or the new one, never a mix, and an error while
writing (``ENOSPC``) leaves the old one in place. Logs (``metrics.jsonl``,
``samples.jsonl``) are append-only JSON lines; :func:`truncate_jsonl` cuts one back when a
run resumes from an earlier step, dropping a half-written last line.

Example:
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "summary.json"
    >>> write_json(path, {"reward": 0.5})
    >>> json.loads(path.read_text())
    {'reward': 0.5}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def user_path(text: str | os.PathLike[str]) -> Path:
    """``text`` as a path, ``~`` and ``~user`` expanded; left as written when there is no
    such user (``~0``), so that it names no file rather than raising."""
    try:
        return Path(text).expanduser()
    except RuntimeError:  # "Could not determine home directory"
        return Path(text)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file beside it, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_json(path: Path, data: Mapping[str, Any] | list[Any]) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def _whole_rows(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # the process died while writing it
        rows.append(json.loads(line))
    return rows


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The whole lines of a JSON-lines file; a half-written last line is left out."""
    return _whole_rows(path.read_text(encoding="utf-8")) if path.is_file() else []


def truncate_jsonl(path: Path, keep: Callable[[dict[str, Any]], bool]) -> int:
    """Rewrite a JSON-lines file with only the rows ``keep`` accepts (and no half line).

    Returns:
        How many rows were dropped (a half-written line counts as one).
    """
    if not path.is_file():
        return 0
    text = path.read_text(encoding="utf-8")
    rows = _whole_rows(text)
    kept = [row for row in rows if keep(row)]
    dropped = len(rows) - len(kept) + (0 if not text or text.endswith("\n") else 1)
    if dropped:
        write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept))
    return dropped


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(folder: Path, *, exclude: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Every file under ``folder`` (but ``exclude``), by its relative path: its size in
    bytes and its SHA-256, to check the folder against later (:func:`manifest_problem`)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name not in exclude:
            files[name] = {"bytes": path.stat().st_size, "sha256": file_digest(path)}
    return files


def manifest_problem(folder: Path, files: Mapping[str, Mapping[str, Any]]) -> str | None:
    """What is wrong with ``folder`` against its manifest ``files``, or None if nothing."""
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != expected["bytes"]:
            return f"{name} has {size} bytes, {expected['bytes']} were written"
        if file_digest(path) != expected["sha256"]:
            return f"{name} has changed since it was written (SHA-256 differs)"
    return None
