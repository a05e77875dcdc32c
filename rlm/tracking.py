"""Metrics to W&B, TensorBoard and JSON Lines behind one object.

The training loop calls ``tracker.log(...)`` whatever is enabled; processes other than the
main one get a :class:`NullTracker` whose calls do nothing, so no ``if track:`` appears in
the loop.

Example:
    >>> import tempfile
    >>> from rlm.run import RunDir
    >>> run = RunDir.create(tempfile.mkdtemp(), "demo", {"lr": 3e-5})
    >>> with Tracker(run, project="rlm", run_name="demo", config={"lr": 3e-5},
    ...              wandb="disabled") as tracker:
    ...     tracker.log({"train/loss": 0.5}, step=1)
    >>> run.metrics_path.read_text().count("train/loss")
    1
"""

from __future__ import annotations

import json
import netrc
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from rlm.errors import ConfigError
from rlm.files import user_path
from rlm.run import RunDir, now_iso, to_plain

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from torch.utils.tensorboard import SummaryWriter

WANDB_MODES = ("auto", "online", "offline", "disabled")
WandbMode = Literal["auto", "online", "offline", "disabled"]
# Old spellings W&B still accepts in WANDB_MODE.
_WANDB_MODE_ALIASES = {"dryrun": "offline", "run": "online"}
_DEFAULT_WANDB_HOST = "api.wandb.ai"
# Samples shown as TensorBoard text: enough to read, small enough to render.
_TB_MAX_ROWS = 32
_TB_MAX_CELL_CHARS = 500


def wandb_mode(requested: str = "auto") -> str:
    """Resolve the W&B mode: "online", "offline" or "disabled".

    "auto" takes ``WANDB_MODE`` if it is set, else "online" when W&B credentials exist
    (``WANDB_API_KEY``, ``WANDB_IDENTITY_TOKEN_FILE`` or a netrc entry for the W&B host),
    else "offline", so a machine without an account still records runs to sync later.

    Raises:
        ConfigError: ``requested`` or ``WANDB_MODE`` is not a mode.

    Example:
        >>> wandb_mode("disabled")
        'disabled'
    """
    if requested not in WANDB_MODES:
        raise ConfigError(f"wandb mode must be one of {', '.join(WANDB_MODES)}, got {requested!r}")
    if requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env:
        mode = _WANDB_MODE_ALIASES.get(env, env)
        if mode not in ("online", "offline", "disabled"):
            raise ConfigError(
                f"WANDB_MODE={env!r} is not a W&B mode; set it to online, offline or disabled"
            )
        return mode
    return "online" if has_wandb_credentials() else "offline"


def has_wandb_credentials() -> bool:
    """Whether W&B would find credentials, from the environment or a netrc file.

    Reads netrc the way W&B does (``NETRC``, else ``~/.netrc``) for the host of
    ``WANDB_BASE_URL`` (default api.wandb.ai). Never raises: unreadable means no.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    base_url = os.environ.get("WANDB_BASE_URL", "").strip()
    if base_url and "//" not in base_url:
        base_url = "https://" + base_url  # "localhost:8080" has no netloc until it has a scheme
    host = urlsplit(base_url).netloc if base_url else _DEFAULT_WANDB_HOST
    path = user_path(os.environ.get("NETRC") or "~/.netrc")
    try:
        entry = netrc.netrc(str(path)).authenticators(host or _DEFAULT_WANDB_HOST)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


STEP_METRIC_PREFIXES = ("eval/", "train/", "reward/", "heldout/")
"""The metric namespaces plotted against the step metric in W&B (``define_metric``)."""


@dataclass
class TrackingSettings:
    """Where a run's folder goes and what it logs to: the same flags in every script."""

    output_dir: Path = Path("runs")
    """Parent folder of run folders."""
    run_name: str | None = None
    """The run folder's name inside --output-dir (default: one the script makes, ending in
    __<seed>__<time>)."""
    wandb: WandbMode = "auto"
    """W&B mode; 'auto' is online when logged in, else offline (wandb sync uploads it later)."""
    wandb_project: str = "rlm"
    """W&B project."""
    wandb_group: str | None = None
    """W&B group: the runs of one comparison or sweep share one (scripts/compare.py and
    rlm sweep set it), so that W&B shows them side by side and averages their seeds."""
    wandb_job_type: str | None = None
    """W&B job type within the group (compare.py: the arm; rlm sweep: 'trial')."""
    tensorboard: bool = True
    """Write TensorBoard events (metrics.jsonl is always written)."""


def open_run(
    settings: TrackingSettings,
    default_name: str,
    config: Mapping[str, Any] | DataclassInstance,
) -> tuple[RunDir, Tracker]:
    """Create the run folder ``<output_dir>/<run_name or default_name>`` and its tracker."""
    name = settings.run_name or default_name
    run_dir = RunDir.create(settings.output_dir, name, config)
    return run_dir, tracker_for(run_dir, settings, config)


def tracker_for(
    run_dir: RunDir,
    settings: TrackingSettings,
    config: Mapping[str, Any] | DataclassInstance,
    *,
    resume_after: int | None = None,
    step_metric: str | None = None,
) -> Tracker:
    """The tracker of an existing run folder, as ``settings`` ask."""
    return Tracker(
        run_dir, project=settings.wandb_project, run_name=run_dir.name, config=config,
        wandb=settings.wandb, tensorboard=settings.tensorboard, resume_after=resume_after,
        group=settings.wandb_group, job_type=settings.wandb_job_type, step_metric=step_metric,
    )  # fmt: skip


def _number(key: str, value: Any) -> float | int:
    # Numpy and torch scalars have .item(); bools become 0/1 like W&B shows them.
    if hasattr(value, "item"):
        try:
            value = value.item()
        except (ValueError, RuntimeError):  # an array or tensor with several elements
            raise TypeError(f"metric {key!r} must be a scalar, got shape {value.shape}") from None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"metric {key!r} must be a number, got {type(value).__name__}") from None


def _cell(value: Any) -> Any:
    """A value W&B tables and JSON accept: numbers and strings as they are, others as text."""
    value = to_plain(value)
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def _markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(value: Any) -> str:
        text = "" if value is None else str(value)
        if len(text) > _TB_MAX_CELL_CHARS:
            text = text[:_TB_MAX_CELL_CHARS] + "…"
        # A pipe or newline would end the markdown cell early.
        return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    lines = [line([fmt(c) for c in columns]), line(["---"] * len(columns))]
    lines += [line([fmt(row.get(c)) for c in columns]) for row in rows[:_TB_MAX_ROWS]]
    if len(rows) > _TB_MAX_ROWS:
        lines.append(f"\n({len(rows) - _TB_MAX_ROWS} more rows in samples.jsonl)")
    return "\n".join(lines)


class Tracker:
    """Log metrics and samples to ``metrics.jsonl``, TensorBoard and W&B at once.

    Args:
        run_dir: The run folder; every sink writes inside it.
        project: The W&B project.
        run_name: The run's display name in W&B.
        config: The resolved config (a mapping or a dataclass), shown in W&B.
        wandb: "auto", "online", "offline" or "disabled"; see :func:`wandb_mode`.
        tensorboard: Whether to write TensorBoard events to ``run_dir.tensorboard_dir``.
        resume_after: Continue the run recorded in ``run_dir`` after this step (the
            step of the checkpoint it resumes from; -1 to start it again): what it had
            logged after the step is dropped from ``metrics.jsonl``, ``samples.jsonl``
            and TensorBoard (``purge_step``), and W&B continues the same run id (W&B keeps
            what it received first of a step logged twice).
        group: The W&B group (runs of one comparison or sweep), or None.
        job_type: The W&B job type, or None.
        step_metric: A metric W&B plots the ``eval/``, ``train/``, ``reward/`` and
            ``heldout/`` curves against (``perf/tokens``: runs compared by budget), which
            every ``log`` call must then carry; None: W&B's step.

    Raises:
        ConfigError: a bad ``wandb`` mode, or W&B could not start (for example online
            without an API key).

    Example:
        >>> import tempfile
        >>> from rlm.run import RunDir
        >>> run = RunDir.create(tempfile.mkdtemp(), "demo", {})
        >>> tracker = Tracker(run, project="rlm", run_name="demo", config={}, wandb="disabled")
        >>> tracker.log({"reward/mean": 0.25}, step=0)
        >>> tracker.log_samples([{"prompt": "Hi", "completion": "there"}], step=0)
        >>> tracker.finish()
    """

    def __init__(
        self,
        run_dir: RunDir,
        *,
        project: str,
        run_name: str,
        config: Mapping[str, Any] | DataclassInstance,
        wandb: str = "auto",
        tensorboard: bool = True,
        resume_after: int | None = None,
        group: str | None = None,
        job_type: str | None = None,
        step_metric: str | None = None,
    ) -> None:
        resume = resume_after is not None
        self.run_dir = run_dir
        self.wandb_mode = wandb_mode(wandb)
        self._finished = False
        self._wandb_run: Any = None
        self._tb: SummaryWriter | None = None

        meta: dict[str, Any] = {"wandb_mode": self.wandb_mode}
        if self.wandb_mode != "disabled":
            # The id lives in meta.json so that a resumed run continues the same W&B run.
            run_id = run_dir.read_meta().get("wandb_id") or secrets.token_hex(4)
            self._wandb_run = _init_wandb(
                project=project,
                name=run_name,
                id=run_id,
                dir=run_dir.path,
                config=to_plain(config),
                mode=self.wandb_mode,
                resume=resume,
                group=group,
                job_type=job_type,
            )
            if step_metric is not None:
                self._wandb_run.define_metric(step_metric)
                for prefix in STEP_METRIC_PREFIXES:
                    self._wandb_run.define_metric(f"{prefix}*", step_metric=step_metric)
            meta.update(
                wandb_id=run_id,
                wandb_project=project,
                # Reading .url offline makes W&B print a warning.
                wandb_url=None if self._wandb_run.offline else self._wandb_run.url,
                wandb_sync_dir=self._wandb_run.sync_dir,  # what `wandb sync` uploads
            )
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # here: only needed when enabled

            purge = None if resume_after is None else resume_after + 1
            self._tb = SummaryWriter(log_dir=str(run_dir.tensorboard_dir), purge_step=purge)
        if resume_after is not None:
            run_dir.rewind(resume_after)
        # Line-buffered append: a resumed run adds to the same file, a crash loses no line.
        self._metrics = open(run_dir.metrics_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        if resume:
            run_dir.set_status("running", error=None, resume_time=now_iso(), **meta)
        else:
            run_dir.update_meta(**meta)

    @property
    def wandb_run(self) -> Any:
        """The ``wandb`` run object, or None when W&B is disabled."""
        return self._wandb_run

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log scalar metrics at ``step`` to every sink.

        Values may be Python, numpy or torch scalars; NaN and infinities are logged as they
        are, since they say something went wrong.

        Raises:
            TypeError: a value is not a scalar number.
        """
        values = {key: _number(key, value) for key, value in metrics.items()}
        self._metrics.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, global_step=step)
        if self._wandb_run is not None:
            self._wandb_run.log(values, step=step)

    def log_samples(
        self,
        rows: list[dict[str, Any]],
        step: int,
        key: str = "eval/samples",
        table_rows: int | None = None,
    ) -> None:
        """Log generated samples (one dict per sample, e.g. prompt, completion, reward).

        Every row goes to ``samples.jsonl`` with ``step`` and ``key`` (reports and
        ``rlm diagnose`` read them); W&B gets a table and TensorBoard a markdown table of
        the first ``table_rows`` (all when None; TensorBoard's long cells cut).
        """
        if not rows:
            return
        with open(self.run_dir.samples_path, "a", encoding="utf-8") as f:
            for row in rows:
                line = {"step": step, "key": key, **{c: _cell(v) for c, v in row.items()}}
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        rows = rows[:table_rows]
        if not rows:
            return
        columns = list(dict.fromkeys(c for row in rows for c in row))  # first-seen order
        if self._tb is not None:
            self._tb.add_text(key, _markdown_table(rows, columns), global_step=step)
        if self._wandb_run is not None:
            import wandb

            header: list[str | int] = list(columns)  # the type wandb.Table declares
            data = [[_cell(row.get(c)) for c in columns] for row in rows]
            self._wandb_run.log({key: wandb.Table(columns=header, data=data)}, step=step)

    def summarize(self, values: Mapping[str, Any]) -> None:
        """Put ``values`` (the run's summary: final evaluation, diagnostics, alarms) in the
        W&B run's summary, where its runs table and comparisons read them."""
        if self._wandb_run is not None:
            self._wandb_run.summary.update(dict(to_plain(values)))

    def alert(
        self, title: str, text: str, *, step: int, details: Mapping[str, Any] | None = None
    ) -> None:
        """Record an alarm (:mod:`rlm.alarms`): a line of ``alerts.jsonl`` (``step``,
        ``title``, ``text`` and ``details``), a TensorBoard text and, online, ``wandb.alert``."""
        line = {"step": step, "title": title, "text": text, **to_plain(details or {})}
        with open(self.run_dir.alerts_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
        if self._tb is not None:
            self._tb.add_text("alerts", text, global_step=step)
        if self._wandb_run is not None and not self._wandb_run.offline:
            self._wandb_run.alert(title=title, text=text, level="WARN")

    def finish(self, status: str = "finished", **extra: Any) -> None:
        """Close every sink and record ``status`` ("finished" or "failed") in ``meta.json``.

        Calling it again does nothing.
        """
        if self._finished:
            return
        self._finished = True
        self._metrics.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb_run is not None:
            self._wandb_run.finish(exit_code=0 if status == "finished" else 1)
        self.run_dir.set_status(status, **extra)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish("finished")
        else:
            self.finish("failed", error=f"{exc_type.__name__}: {exc}")


class NullTracker:
    """A tracker that records nothing, for processes other than the main one.

    Example:
        >>> tracker = NullTracker()
        >>> tracker.log({"train/loss": 0.5}, step=1)
        >>> tracker.finish()
    """

    wandb_run = None
    wandb_mode = "disabled"

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Do nothing."""

    def log_samples(
        self,
        rows: list[dict[str, Any]],
        step: int,
        key: str = "eval/samples",
        table_rows: int | None = None,
    ) -> None:
        """Do nothing."""

    def summarize(self, values: Mapping[str, Any]) -> None:
        """Do nothing."""

    def alert(
        self, title: str, text: str, *, step: int, details: Mapping[str, Any] | None = None
    ) -> None:
        """Do nothing."""

    def finish(self, status: str = "finished", **extra: Any) -> None:
        """Do nothing."""

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


def _init_wandb(
    *, project: str, name: str, id: str, dir: Path, config: Any, mode: str, resume: bool,
    group: str | None, job_type: str | None,
) -> Any:  # fmt: skip
    import wandb  # imported here: ~0.7 s, and not needed when W&B is disabled

    try:
        return wandb.init(
            project=project,
            name=name,
            id=id,
            dir=str(dir),
            config=config,
            mode=mode,  # type: ignore[arg-type]
            resume="allow" if resume else None,
            group=group,
            job_type=job_type,
            # quiet keeps the run's URL (online) or local folder (offline) and drops the
            # banners and the end-of-run summary panel.
            settings=wandb.Settings(quiet=True),
        )
    except wandb.errors.Error as exc:
        raise ConfigError(
            f"W&B could not start in {mode} mode ({exc}); run `wandb login` or set "
            "WANDB_API_KEY, or log offline with --wandb offline (sync later with `wandb sync`)"
        ) from exc
