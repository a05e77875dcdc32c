"""One self-contained HTML report over run folders: it opens offline, in any browser.

    python -m rlm report runs/compare -o runs/compare/report.html
    python -m rlm report RUN [RUN ...] -o report.html --title "lr sweep"

The page holds plotly's JavaScript inline (no network access) and, for the runs given
(run folders, or folders that hold them):

- the alarms each run tripped (``alerts.jsonl``, :mod:`rlm.alarms`);
- curves of the reward, the held-out reward, KL, entropy, length and every diagnostic
  against generated tokens, runs of one group (the same algorithm and experiment name,
  different seeds) drawn as their mean with a 95% bootstrap band over seeds, each run
  as a thin line;
- the reward-against-KL frontier: each run's evaluations, its final one marked;
- a sample browser over every evaluation's prompts, completions and rewards, sorted by
  prompt so that one prompt's completions line up across evaluations and runs, filtered
  by text, run and step;
- each run's settings side by side (the rows that differ marked), commit and packages.

Example:
    >>> write_report(find_runs([Path("runs/compare")]), Path("report.html"))  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlm.aggregate import band, curves_on_grid
from rlm.diagnostics import DIAGNOSTICS
from rlm.errors import ConfigError
from rlm.run_folders import RunFolder

CURVES: dict[str, str] = {
    "eval/reward_mean": "reward (held-out prompts)",
    "eval/heldout_reward_mean": "held-out reward model",
    **DIAGNOSTICS,
}
"""The metrics drawn against generated tokens, with their titles."""

_SHORT_TITLES = {
    "eval/reward_mean": "reward",
    "eval/heldout_reward_mean": "held-out reward",
    "eval/distinct_1": "distinct-1",
    "eval/distinct_2": "distinct-2",
    "eval/completion_length": "completion length (tokens)",
    "eval/cut_share": "share cut at the token limit",
    "eval/ref_perplexity": "perplexity under the reference",
    "eval/kl": "KL to the reference (nats)",
    "eval/kl_per_token": "KL per token (nats)",
    "eval/entropy": "entropy per token (nats)",
    "eval/heldout_gap": "train - held-out gap (sd)",
}
_GRID_POINTS = 40
_COLOURS = [
    "#636efa",
    "#ef553b",
    "#00cc96",
    "#ab63fa",
    "#ffa15a",
    "#19d3f3",
    "#ff6692",
    "#b6e880",
    "#ff97ff",
    "#fecb52",
]  # fmt: skip  (plotly's qualitative palette)


def _title(key: str) -> str:
    return _SHORT_TITLES.get(key, key.removeprefix("eval/").replace("_", " "))


def _groups(runs: Sequence[RunFolder]) -> dict[str, list[RunFolder]]:
    groups: dict[str, list[RunFolder]] = defaultdict(list)
    for run in runs:
        groups[run.group].append(run)
    return dict(groups)


def _colour(groups: dict[str, list[RunFolder]]) -> dict[str, str]:
    return {name: _COLOURS[i % len(_COLOURS)] for i, name in enumerate(groups)}


def _rgba(colour: str, alpha: float) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _finite(values: Any) -> list[float | None]:
    """JSON-safe: NaN and infinities become None (gaps in a plotly line)."""
    return [float(v) if v is not None and math.isfinite(v) else None for v in values]


def curves_figure(runs: Sequence[RunFolder]) -> Any:
    """Every metric of :data:`CURVES` that some run logged, one panel each."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    keys = [k for k in CURVES if any(run.curve(k)[1] for run in runs)]
    if not keys:
        raise ConfigError("the runs have no evaluations to draw (metrics.jsonl is empty)")
    columns = 3
    rows = math.ceil(len(keys) / columns)
    figure = make_subplots(
        rows=rows, cols=columns, subplot_titles=[_title(k) for k in keys],
        horizontal_spacing=0.06, vertical_spacing=0.35 / rows,
    )  # fmt: skip
    groups = _groups(runs)
    colours = _colour(groups)
    for index, key in enumerate(keys):
        row, col = index // columns + 1, index % columns + 1
        for name, members in groups.items():
            curves = [run.curve(key) for run in members]
            curves = [(x, y) for x, y in curves if y]
            if not curves:
                continue
            legend = index == 0
            end = min(max(x) for x, _ in curves)
            if len(curves) > 1 and end > 0:
                grid = np.linspace(0, end, _GRID_POINTS)
                mean, low, high = band(curves_on_grid(curves, grid))
                band_x = [*grid.tolist(), *grid[::-1].tolist()]
                band_y = _finite([*high.tolist(), *low[::-1].tolist()])
                figure.add_trace(
                    go.Scatter(
                        x=band_x, y=band_y, fill="toself", line={"width": 0},
                        fillcolor=_rgba(colours[name], 0.18), hoverinfo="skip",
                        legendgroup=name, showlegend=False, name=f"{name} 95% band",
                    ),
                    row=row, col=col,
                )  # fmt: skip
                figure.add_trace(
                    go.Scatter(
                        x=grid.tolist(), y=_finite(mean), mode="lines",
                        line={"color": colours[name], "width": 3}, legendgroup=name,
                        name=f"{name} (mean of {len(curves)})", showlegend=legend,
                    ),
                    row=row, col=col,
                )  # fmt: skip
            for run, (x, y) in zip(members, curves, strict=False):
                figure.add_trace(
                    go.Scatter(
                        x=x, y=_finite(y), mode="lines+markers", legendgroup=name,
                        line={"color": colours[name], "width": 1}, marker={"size": 4},
                        name=run.name, showlegend=legend, opacity=0.6,
                        hovertemplate=f"{run.name}<br>%{{x}} tokens: %{{y:.4g}}<extra></extra>",
                    ),
                    row=row, col=col,
                )  # fmt: skip
    x_title = "generated tokens" if any(r.generates for r in runs) else "step"
    if any(not r.generates for r in runs) and any(r.generates for r in runs):
        x_title = "generated tokens (steps, for runs that generate none)"
    figure.update_xaxes(title_text=x_title, title_font_size=10)
    figure.update_layout(
        height=300 * rows, template="plotly_white", margin={"t": 40, "l": 50, "r": 20},
        legend={"orientation": "h", "y": -0.08 / rows * 3},
    )  # fmt: skip
    return figure


def frontier_figure(runs: Sequence[RunFolder]) -> Any:
    """Reward against KL to the reference: each run's evaluations in order, its last one
    marked (what each run paid, in KL, for its reward)."""
    import plotly.graph_objects as go

    figure = go.Figure()
    groups = _groups(runs)
    colours = _colour(groups)
    for name, members in groups.items():
        for i, run in enumerate(members):
            points = [r for r in run.evaluations if "eval/kl" in r]
            if not points:
                continue
            figure.add_trace(
                go.Scatter(
                    x=_finite(r["eval/kl"] for r in points),
                    y=_finite(r["eval/reward_mean"] for r in points),
                    mode="lines+markers", legendgroup=name, name=name, showlegend=i == 0,
                    line={"color": colours[name], "width": 1, "dash": "dot"},
                    marker={"size": [6] * (len(points) - 1) + [14], "color": colours[name]},
                    text=[f"{run.name}, step {r['step']}" for r in points],
                    hovertemplate="%{text}<br>KL %{x:.3g}, reward %{y:.3g}<extra></extra>",
                )
            )  # fmt: skip
    figure.update_layout(
        template="plotly_white", height=450, margin={"t": 30},
        xaxis_title="KL to the reference (nats per completion)",
        yaxis_title="reward (held-out prompts)",
    )  # fmt: skip
    return figure


def _sample_rows(runs: Sequence[RunFolder]) -> list[dict[str, Any]]:
    """Every evaluation sample of every run, sorted by prompt, run, then step."""
    rows = []
    for run in runs:
        for sample in run.samples:
            if sample.get("key", "eval/samples") != "eval/samples":
                continue
            extra = {
                k: v for k, v in sample.items()
                if k not in ("step", "key", "prompt", "completion", "reward")
            }  # fmt: skip
            rows.append({
                "run": run.name, "group": run.group, "step": sample["step"],
                "prompt": str(sample.get("prompt", "")),
                "completion": str(sample.get("completion", "")),
                "reward": sample.get("reward"),
                "extra": ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                   for k, v in extra.items()),
            })  # fmt: skip
    order = {run.name: i for i, run in enumerate(runs)}
    return sorted(rows, key=lambda r: (r["prompt"], order[r["run"]], r["step"]))


def _settings_table(runs: Sequence[RunFolder]) -> str:
    flats = [run.flat_config() for run in runs]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    head = "".join(f"<th>{html.escape(run.name)}</th>" for run in runs)
    lines = []
    for key in keys:
        values = [json.dumps(flat.get(key)) for flat in flats]
        differs = len(set(values)) > 1
        cells = "".join(f"<td>{html.escape(v)}</td>" for v in values)
        cls = ' class="differs"' if differs else ""
        lines.append(f"<tr{cls}><th>{html.escape(key)}</th>{cells}</tr>")
    for label, get in (
        ("commit", lambda r: f"{(r.meta.get('git_commit') or '?')[:10]}"
                             f"{' (uncommitted changes)' if r.meta.get('git_dirty') else ''}"),
        ("started", lambda r: r.meta.get("start_time", "?")),
        ("status", lambda r: r.meta.get("status", "?")),
        ("machine", lambda r: f"{r.meta.get('hostname', '?')}, {r.meta.get('platform', '?')}"),
        ("python", lambda r: r.meta.get("python", "?")),
        ("packages", lambda r: ", ".join(f"{k} {v}" for k, v in r.meta.get("packages", {}).items())),  # noqa: E501
    ):  # fmt: skip
        values = [str(get(run)) for run in runs]
        cls = ' class="differs"' if len(set(values)) > 1 else ""
        cells = "".join(f"<td>{html.escape(v)}</td>" for v in values)
        lines.append(f"<tr{cls}><th>{label}</th>{cells}</tr>")
    return f"<table id='settings'><tr><th>setting</th>{head}</tr>{''.join(lines)}</table>"


def _alarms_section(runs: Sequence[RunFolder]) -> str:
    rows = [
        f"<tr><td>{html.escape(run.name)}</td><td>{a['step']}</td>"
        f"<td>{html.escape(str(a.get('alarm', '')))}</td><td>{html.escape(a['text'])}</td></tr>"
        for run in runs
        for a in run.alerts
    ]
    tripped = {run.name for run in runs if run.alerts}
    if not rows:
        return "<p id='alarm-summary'>No alarm tripped in these runs.</p>"
    summary = (
        f"<p id='alarm-summary' class='alarm'>{len(rows)} alarms tripped, in "
        f"{len(tripped)} of {len(runs)} runs: read those runs' samples below.</p>"
    )
    return summary + (
        "<table id='alarms'><tr><th>run</th><th>step</th><th>alarm</th><th>what tripped</th></tr>"
        + "".join(rows) + "</table>"
    )  # fmt: skip


def _summary_table(runs: Sequence[RunFolder]) -> str:
    head = ("<tr><th>run</th><th>group</th><th>seed</th><th>status</th><th>reward before</th>"
            "<th>reward after</th><th>KL after</th><th>generated tokens</th><th>wall time s</th>"
            "<th>alarms</th></tr>")  # fmt: skip
    lines = []
    for run in runs:
        s = run.summary or {}
        evals = run.evaluations
        first, last = (evals[0], evals[-1]) if evals else ({}, {})

        def num(value: Any, fmt: str = "+.3f") -> str:
            return "-" if value is None else format(value, fmt)

        lines.append(
            f"<tr><td>{html.escape(run.name)}</td><td>{html.escape(run.group)}</td>"
            f"<td>{run.seed}</td><td>{run.meta.get('status', '?')}</td>"
            f"<td>{num(first.get('eval/reward_mean'))}</td>"
            f"<td>{num(last.get('eval/reward_mean'))}</td>"
            f"<td>{num(last.get('eval/kl'), '.2f')}</td>"
            f"<td>{num(s.get('generated_tokens', last.get('perf/tokens')), ',')}</td>"
            f"<td>{num(s.get('wall_time_s'), ',.0f')}</td>"
            f"<td>{', '.join(sorted({str(a.get('alarm')) for a in run.alerts})) or '-'}</td></tr>"
        )
    return f"<table id='runs'>{head}{''.join(lines)}</table>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }
tr.differs th, tr.differs td { background: #fff3c4; }
.alarm { color: #a40000; font-weight: 600; }
#samples td.completion { white-space: pre-wrap; max-width: 520px; }
#samples td.prompt { max-width: 320px; }
.controls { margin: 0.5em 0; display: flex; gap: 1em; align-items: center; }
.controls input[type=search] { width: 24em; padding: 3px; }
.settings-wrap { overflow-x: auto; }
"""

_SCRIPT = """
(function () {
  const rows = JSON.parse(document.getElementById("sample-data").textContent);
  const body = document.querySelector("#samples tbody");
  const text = document.getElementById("sample-filter");
  const run = document.getElementById("sample-run");
  const step = document.getElementById("sample-step");
  const count = document.getElementById("sample-count");
  const LIMIT = 500;
  for (const name of [...new Set(rows.map(r => r.run))]) run.add(new Option(name, name));
  for (const s of [...new Set(rows.map(r => r.step))].sort((a, b) => a - b))
    step.add(new Option("step " + s, String(s)));
  function cell(tr, value, cls) {
    const td = tr.insertCell(); td.textContent = value; if (cls) td.className = cls;
  }
  function render() {
    const needle = text.value.trim().toLowerCase();
    const shown = rows.filter(r =>
      (run.value === "" || r.run === run.value) &&
      (step.value === "" || String(r.step) === step.value) &&
      (needle === "" || r.prompt.toLowerCase().includes(needle) ||
       r.completion.toLowerCase().includes(needle)));
    body.replaceChildren();
    for (const r of shown.slice(0, LIMIT)) {
      const tr = body.insertRow();
      cell(tr, r.run); cell(tr, r.step); cell(tr, r.prompt, "prompt");
      cell(tr, r.completion, "completion");
      cell(tr, r.reward === null ? "-" : Number(r.reward).toFixed(3)); cell(tr, r.extra);
    }
    count.textContent = shown.length + " of " + rows.length + " samples" +
      (shown.length > LIMIT ? " (the first " + LIMIT + " shown)" : "");
  }
  for (const el of [text, run, step]) el.addEventListener("input", render);
  render();
})();
"""


def _script_json(value: Any) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(value, ensure_ascii=False).replace("</", "<\\/")


def report_html(runs: Sequence[RunFolder], title: str = "rlm report") -> str:
    """The report over ``runs`` as one HTML document (plotly's JavaScript inline)."""
    import plotly.offline

    if not runs:
        raise ConfigError("a report needs at least one run folder")
    curves = curves_figure(runs).to_html(full_html=False, include_plotlyjs=False, div_id="curves")
    frontier = frontier_figure(runs).to_html(
        full_html=False, include_plotlyjs=False, div_id="frontier"
    )
    samples = _sample_rows(runs)
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    groups = _groups(runs)
    described = ", ".join(f"{name} ({len(members)})" for name, members in groups.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style>
<script>{plotly.offline.get_plotlyjs()}</script>
</head><body>
<h1>{html.escape(title)}</h1>
<p>{len(runs)} runs in {len(groups)} groups: {html.escape(described)}. Written {generated} by
<code>python -m rlm report</code>; everything on this page is in this one file.</p>
<h2>Alarms</h2>
{_alarms_section(runs)}
<h2>Runs</h2>
{_summary_table(runs)}
<h2>Curves</h2>
<p>Each group's mean over its runs (seeds) with a 95% bootstrap band; each run as a thin
line. Click a legend entry to hide it.</p>
{curves}
<h2>Reward against KL</h2>
<p>Each run's evaluations in order; the large marker is its last.</p>
{frontier}
<h2>Samples</h2>
<div class="controls">
<input id="sample-filter" type="search" placeholder="filter prompts and completions">
<select id="sample-run"><option value="">all runs</option></select>
<select id="sample-step"><option value="">all evaluations</option></select>
<span id="sample-count"></span></div>
<table id="samples"><thead><tr><th>run</th><th>step</th><th>prompt</th><th>completion</th>
<th>reward</th><th>other scores</th></tr></thead><tbody></tbody></table>
<script type="application/json" id="sample-data">{_script_json(samples)}</script>
<h2>Settings, commits and packages</h2>
<p>Rows that differ between runs are marked.</p>
<div class="settings-wrap">{_settings_table(runs)}</div>
<script>{_SCRIPT}</script>
</body></html>
"""


def write_report(runs: Sequence[RunFolder], path: Path, title: str = "rlm report") -> Path:
    """Write :func:`report_html` to ``path`` (its folder made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(runs, title), encoding="utf-8")
    return path
