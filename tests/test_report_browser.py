"""The run report in a real browser: headless Chromium renders it without console
errors, with every section, and draws something (the screenshot is not blank).

Chromium is the Debian package `chromium`; `make test` installs it when missing.
"""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from pipeline import html_report, report

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or next((p for p in map(shutil.which, CANDIDATES) if p), None)
    if not path:
        pytest.fail("no Chromium found (tried $CHROMIUM and " + ", ".join(CANDIDATES) + "): `make test` "
                    "installs the Debian package `chromium`; or set CHROMIUM to a Chromium binary")
    return path


def _headless(*args, timeout=120):
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def report_path(trained_run):
    config, timings, _ = trained_run
    return html_report.write(config, timings)


def test_chromium_renders_every_section_without_console_errors(report_path):
    url = "file://" + os.path.abspath(report_path)
    result = _headless("--dump-dom", url)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    for section in ("summary", "run", "data", "models", "family-mf", "family-two_tower"):
        assert f'id="{section}"' in dom, section
    assert dom.count("<svg") >= 2 and 'class="calibration"' in dom
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console


def test_the_console_check_sees_a_console_error(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<html><body><p>x</p><script>console.error("broken page")</script></body></html>')
    result = _headless("--dump-dom", "file://" + str(page))
    assert any(":CONSOLE" in line and "broken page" in line for line in result.stderr.splitlines())


def test_the_screenshot_of_the_report_is_not_blank(report_path, tmp_path):
    shot = tmp_path / "report.png"
    result = _headless(f"--screenshot={shot}", "--window-size=1280,2400", "file://" + os.path.abspath(report_path))
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2400, 1280)
    dark = (pixels < 128).mean()
    # Text, tables and charts: a small share of dark pixels, many grey levels (anti-aliasing, lines).
    assert 0.005 < dark < 0.5, dark
    assert len(np.unique(pixels)) > 20


def test_the_summary_chromium_shows_has_the_evaluators_numbers(report_path, trained_run):
    config, _, _ = trained_run
    dom = _headless("--dump-dom", "file://" + os.path.abspath(report_path)).stdout
    summary = dom[dom.index('id="summary"'):dom.index('id="models"')]
    cells = re.findall(r'<td data-family="([^"]+)" data-output="([^"]*)" data-metric="([^"]+)" '
                       r'data-split="([^"]+)">([^<]+)</td>', summary)
    outputs = report.output_dirs(config.pipeline_root)
    assert {family for family, *_ in cells} == set(config.families)
    for family, output, metric, split, shown in cells:
        expected = report.split_metrics(outputs[f"Evaluator_{family}"]["evaluation"])[split][output][metric]
        assert float(shown) == pytest.approx(expected, abs=5e-5), (family, output, metric, split)
    assert {(c[2], c[3]) for c in cells if c[0] == "mf"} == {("rmse", "eval"), ("rmse", "test")}
