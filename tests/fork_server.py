"""Experiment runs started as forks of one process that has imported everything once.

A run's own process spends ~7 s importing torch, transformers and trl before it does
anything; the fault-injection tests start dozens of runs only to kill them. This server
imports the four experiments (and what they import lazily) once, then for each request
forks a child that runs one experiment's ``cli`` exactly as ``python
experiments/<algorithm>.py ARGS`` would (its own process, its own ``sys.argv``, output to
/dev/null), and reports the child's pid and, when it has ended, its exit status. Nothing
has run in the server before a fork (no torch thread pool, no model), so each child
starts as a fresh process would.

Protocol, one JSON line each way: ``{"algorithm": "ppo", "args": [...]}`` in (optionally
``"stdout"`` and ``"stderr"``: files for the child's output instead of /dev/null, and
``"env"``: its environment); ``{"pid": N}`` out at once, then ``{"exit": S}`` (``-9`` for
SIGKILL) when the child has ended.

    python -m tests.fork_server   # from the project root, with tests.helpers.script_env()
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
import traceback

from tests.helpers import EXPERIMENTS, ROOT, load_experiment

# What the runs import on first use: imported here once (imports only, nothing run).
PRELOADED = (
    "envs", "torch.utils.tensorboard", "transformers.trainer", "wandb",
    "trl.trainer.grpo_trainer", "trl.trainer.rloo_trainer", "trl.trainer.sft_trainer",
)  # fmt: skip


def _run_child(module, request: dict) -> None:
    """In the child: the experiment's cli, then exit with its status (never return)."""
    for fd, key in ((1, "stdout"), (2, "stderr")):
        target = os.open(request.get(key, os.devnull), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
    if "env" in request:  # the environment the test would give a new process
        os.environ.clear()
        os.environ.update(request["env"])
    args = request["args"]
    sys.argv = [str(ROOT / "experiments" / f"{request['algorithm']}.py"), *args]
    code = 1
    try:
        code = module.cli(args)
    except SystemExit as exc:  # a preempted run exits with 75
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    for name in PRELOADED:
        importlib.import_module(name)
    modules = {algorithm: load_experiment(algorithm) for algorithm in EXPERIMENTS}
    gc.freeze()  # the children's collector leaves the imported objects (and their pages) be
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _run_child(modules[request["algorithm"]], request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    main()
