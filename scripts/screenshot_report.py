"""Screenshots of an HTML report (``python -m rlm report``) in headless Chromium, for docs.

    python scripts/screenshot_report.py runs/compare/report.html -o docs/report.png
    python scripts/screenshot_report.py report.html -o samples.png --section samples --filter love

Uses the system's Chromium (Debian's ``chromium``: ``make browser``, or ``--browser PATH``)
through playwright; nothing is downloaded. ``--section`` scrolls to one part of the page
(alarms, curves, frontier, samples, settings); ``--filter`` types into the sample browser.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file: import rlm from the checkout

from rlm.errors import ConfigError  # noqa: E402
from rlm.scripting import run_cli  # noqa: E402

SECTIONS = {"alarms": "#alarm-summary", "curves": "#curves", "frontier": "#frontier",
            "samples": "#sample-filter", "settings": "#settings"}  # fmt: skip


@dataclass
class Config:
    report: Annotated[Path, tyro.conf.Positional]
    """The HTML report."""
    output: Annotated[Path, tyro.conf.arg(aliases=["-o"])] = Path("report.png")
    """The PNG to write."""
    section: Literal["top", "alarms", "curves", "frontier", "samples", "settings"] = "top"
    """Where the screenshot starts."""
    filter: str | None = None
    """Text typed into the sample browser's filter first."""
    width: int = 1400
    height: int = 1600
    browser: Path | None = None
    """Chromium's executable (default: chromium on the PATH)."""


def main(config: Config) -> None:
    from playwright.sync_api import sync_playwright

    browser_path = config.browser or shutil.which("chromium")
    if browser_path is None:
        raise ConfigError("no chromium on the PATH: `make browser`, or pass --browser")
    if not config.report.is_file():
        raise ConfigError(f"{config.report} does not exist")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(browser_path), args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": config.width, "height": config.height})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(config.report.resolve().as_uri())
        page.wait_for_selector("#curves .main-svg")
        if config.filter is not None:
            page.fill("#sample-filter", config.filter)
        if config.section != "top":
            page.locator(SECTIONS[config.section]).scroll_into_view_if_needed()
            page.evaluate(f"document.querySelector('{SECTIONS[config.section]}').scrollIntoView()")
        config.output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(config.output))
        browser.close()
    if errors:
        raise ConfigError(f"the page raised errors: {errors}")
    print(f"screenshot written to {config.output}")


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, Config, argv)


if __name__ == "__main__":
    sys.exit(cli())
