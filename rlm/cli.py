"""The ``rlm`` command.

    rlm list-envs                 # every registered environment with its description
    python -m rlm list-envs       # the same

Environments of the project's ``envs`` package are registered by importing it; pass
``--module NAME`` (repeatable) to import other modules that register environments.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import gymnasium as gym

from rlm.env import registered_text_env_ids


def _describe(env_id: str) -> str:
    entry_point = gym.spec(env_id).entry_point
    creator = (
        gym.envs.registration.load_env_creator(entry_point)
        if isinstance(entry_point, str)
        else entry_point
    )
    module = sys.modules.get(getattr(creator, "__module__", ""), None)
    doc = (getattr(creator, "__doc__", None) or getattr(module, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def list_envs(modules: list[str]) -> int:
    for module in modules:
        importlib.import_module(module)
    ids = registered_text_env_ids()
    if not ids:
        print("no environments registered under rlm/", file=sys.stderr)
        return 1
    width = max(len(i) for i in ids)
    for env_id in ids:
        print(f"{env_id:<{width}}  {_describe(env_id)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlm", description="rlm command-line tools")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list-envs", help="list registered environments")
    listing.add_argument("--module", action="append", default=["envs"], help="module to import")
    args = parser.parse_args(argv)
    if args.command == "list-envs":
        return list_envs(args.module)
    return 2


if __name__ == "__main__":
    sys.exit(main())
