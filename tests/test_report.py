"""The HTML report and the diagnostics recomputed from saved runs, on real tiny runs.

    python -m pytest tests/test_report.py -q

Three tiny runs (PPO seeds 1 and 2, GRPO seed 1 with an alarm set to trip) are made once,
as forks of the fork server; the report over them is opened in headless Chromium (the
system's: ``make browser``), driven by playwright.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlm.cli import main as rlm_cli
from rlm.diagnose import diagnose_run, format_diagnoses, run_alarm_settings
from rlm.diagnostics import text_diagnostics
from rlm.errors import ConfigError
from rlm.run_folders import find_runs
from tests.helpers import ForkedRuns, alerts_of, metrics_of, only_run, samples_of, tiny_flags


@pytest.fixture(scope="module")
def runs(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A comparison's folder: ppo/ with seeds 1 and 2, grpo/ with seed 1 and an alarm."""
    root = tmp_path_factory.mktemp("review")
    arms = [("ppo", 1, []), ("ppo", 2, []), ("grpo", 1, ["--alarm-distinct-drop", "1.5"])]
    with ForkedRuns() as server:
        for algorithm, seed, flags in arms:
            out = root / algorithm / str(seed)
            args = [*tiny_flags(algorithm, tiny_model_path, out), "--seed", str(seed), *flags]
            assert server.run(algorithm, args) == 0, f"{algorithm} seed {seed} failed"
            shutil.move(only_run(out), root / algorithm)  # arm/<run>, as compare.py lays out
            out.rmdir()
    return root


@pytest.fixture(scope="module")
def report(runs: Path) -> Path:
    path = runs / "report.html"
    assert rlm_cli(["report", str(runs), "-o", str(path), "--title", "tiny comparison"]) == 0
    return path


def test_find_runs_takes_run_folders_and_folders_that_hold_them(runs: Path) -> None:
    found = find_runs([runs])
    assert [(r.group, r.seed) for r in found] == [("grpo", 1), ("ppo", 1), ("ppo", 2)]
    assert find_runs([runs / "grpo", found[1].path])[1].path == found[1].path
    with pytest.raises(ConfigError, match="holds no run folder"):
        find_runs([runs / "ppo" / found[1].name / "checkpoints"])


def test_the_report_is_one_file_that_needs_no_network(report: Path, runs: Path) -> None:
    page = report.read_text()
    assert "<script src" not in page and "<link" not in page  # nothing fetched
    assert "Plotly" in page  # plotly.js itself, inline
    for run in find_runs([runs]):
        assert run.name in page


def test_diagnostics_from_saved_samples_repeat_the_logged_ones(runs: Path) -> None:
    for run in find_runs([runs]):
        diagnosis = diagnose_run(run)
        logged = {row["step"]: row for row in run.evaluations}
        assert sorted(diagnosis.evaluations) == sorted(logged) == [0, 2, 4]
        for step, values in diagnosis.evaluations.items():
            for key in text_diagnostics([]):
                assert values[key] == pytest.approx(logged[step][key], nan_ok=True), (step, key)
        # The run's own thresholds: the same alarms as it tripped while it ran.
        assert [t.message for t in diagnosis.trips] == [a["text"] for a in run.alerts]
    grpo = find_runs([runs / "grpo"])[0]
    assert [a["alarm"] for a in grpo.alerts] == ["distinct_drop"]


def test_diagnose_prints_a_table_and_takes_other_thresholds(runs: Path, capsys) -> None:
    assert rlm_cli(["diagnose", str(runs / "ppo")]) == 0
    out = capsys.readouterr().out
    assert out.count("| rlm_Sentiment-v0__ppo__") == 4  # two runs, first and last evaluation
    assert "No alarm tripped." in out
    # Other thresholds, applied to the saved evaluations: 1.5 trips unless distinct-2 rises by half.
    assert rlm_cli(["diagnose", str(runs / "ppo"), "--alarm", "repetition=none",
                    "--alarm", "distinct_drop=1.5"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("distinct_drop: eval/distinct_2 is") == 2
    run = find_runs([runs / "ppo"])[0]
    with pytest.raises(ConfigError, match="unknown alarm 'repetitions'"):
        run_alarm_settings(run, {"repetitions": 0.1})
    assert "No alarm tripped." in format_diagnoses([diagnose_run(run)])


def _browser() -> str:
    for candidate in (os.environ.get("RLM_BROWSER"), shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):  # fmt: skip
        if candidate:
            return candidate
    pytest.fail("no Chromium: run `make browser` (Debian's chromium) or set RLM_BROWSER")


@pytest.fixture
def page(report: Path) -> Iterator:
    """The report open in headless Chromium, with every console error and page error."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_browser(), args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab.errors = []
        tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: tab.errors.append(str(e)))
        tab.goto(report.as_uri())
        tab.wait_for_selector("#curves .main-svg")
        tab.wait_for_selector("#frontier .main-svg")
        yield tab
        browser.close()


def test_the_report_renders_the_runs_data_in_a_browser(page, runs: Path) -> None:
    assert page.errors == []
    found = find_runs([runs])
    traces = page.evaluate(
        "document.getElementById('curves').data.map(t => ({name: t.name, y: t.y}))"
    )
    names = {t["name"] for t in traces}
    assert {run.name for run in found} <= names
    assert "ppo (mean of 2)" in names  # the seeds' band and mean
    # The reward panel's trace of a run holds that run's evaluations.
    ppo = found[1]
    rewards = [row["eval/reward_mean"] for row in metrics_of(ppo.path) if "eval/reward_mean" in row]
    first = next(t for t in traces if t["name"] == ppo.name)
    assert first["y"] == pytest.approx(rewards)
    frontier = page.evaluate("document.getElementById('frontier').data.map(t => t.name)")
    assert set(frontier) == {"grpo", "ppo"}
    # GRPO's alarm is on the page; the settings that differ (the seed) are marked.
    grpo = found[0]
    assert alerts_of(grpo.path)[0]["text"] in page.text_content("#alarms")
    assert page.get_attribute("#settings tr:has(th:text-is('run.seed'))", "class") == "differs"
    assert page.get_attribute("#settings tr:has(th:text-is('run.model'))", "class") is None


def test_the_sample_browser_filters_by_text_run_and_step(page, runs: Path) -> None:
    found = find_runs([runs])
    samples = {run.name: samples_of(run.path) for run in found}
    total = sum(len(rows) for rows in samples.values())

    def shown() -> tuple[str, int]:
        count = page.text_content("#sample-count")
        return count, page.locator("#samples tbody tr").count()

    assert shown() == (f"{total} of {total} samples", total)
    word = samples[found[1].name][-1]["completion"].split()[0]
    matching = sum(word.lower() in (s["prompt"] + " " + s["completion"]).lower()
                   for rows in samples.values() for s in rows)  # fmt: skip
    page.fill("#sample-filter", word)
    assert shown() == (f"{matching} of {total} samples", matching)
    page.fill("#sample-filter", "")
    page.select_option("#sample-run", found[0].name)
    page.select_option("#sample-step", "4")
    at_four = [s for s in samples[found[0].name] if s["step"] == 4]
    assert shown() == (f"{len(at_four)} of {total} samples", len(at_four))
    assert page.errors == []
