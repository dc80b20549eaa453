"""The dashboard in a real browser: `strikeflow demo` runs the pipeline and the page, headless Chromium opens it.

Checks what a user sees: the chain list links the demo's chains; the chain page renders rows for every
strike with the ATM strike highlighted and both charts drawn; its numbers change while the test watches
(live updates over the WebSocket); and the browser console holds no errors. The screenshot goes to
``$STRIKEFLOW_SCREENSHOT`` when set (``make screenshot`` refreshes docs/dashboard.png), else to a temp dir.

Chromium: Debian's ``chromium`` and ``chromium-driver`` (``scripts/ensure_chromium.sh``, run by ``make
test``, installs them when missing); Selenium is given both paths, so it never tries to download a browser.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.integration

CELLS = "#chain tbody td[data-field]"
# read in one script: the page re-renders its table when a new bar arrives, so element handles go stale
TEXTS = "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)"


def _texts(driver: webdriver.Chrome, selector: str) -> list[str]:
    return driver.execute_script(TEXTS, selector)


def _browser() -> webdriver.Chrome:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("Chromium is missing: run scripts/ensure_chromium.sh (Debian's chromium and chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--window-size=1400,1100", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


async def _dashboard_url(proc: asyncio.subprocess.Process, lines: list[str]) -> str:
    while True:
        raw = await proc.stdout.readline()
        if not raw:
            raise AssertionError("demo ended before printing its dashboard:\n" + "".join(lines[-40:]))
        lines.append(raw.decode(errors="replace"))
        found = re.search(r"dashboard (http://127\.0\.0\.1:\d+/)", lines[-1])
        if found:
            return found.group(1)


async def _first_chain(url: str) -> dict:
    """The first NIFTY chain whose page has rows (the first bars close a few seconds into the demo)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(240):
            async with http.get(f"{url}api/chains") as response:
                chains = [c for c in (await response.json())["chains"] if c["underlying"] == "NIFTY"]
            for chain in chains:
                async with http.get(f"{url}api/chain", params={"underlying": "NIFTY", "expiry": chain["expiry"]}) as r:
                    if r.status == 200 and len((await r.json())["rows"]) >= 3:
                        return chain
            await asyncio.sleep(0.5)
    raise AssertionError("no NIFTY chain with rows on the dashboard after 120 s")


def _look(url: str, expiry: str, screenshot: Path) -> dict:
    """Drive the browser (blocking): what the page showed."""
    driver = _browser()
    try:
        driver.get(url)
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chains tbody a"))
        links = driver.execute_script("return [...document.querySelectorAll('#chains tbody a')].map(a => a.href)")
        driver.get(f"{url}chain?underlying=NIFTY&expiry={expiry}")
        WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chain tbody tr")) >= 3)
        first = _texts(driver, CELLS)
        WebDriverWait(driver, 45, poll_frequency=0.5).until(lambda d: _texts(d, CELLS) != first)
        later = _texts(driver, CELLS)
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#oi-chart canvas")
                                        and d.find_elements(By.CSS_SELECTOR, "#series-chart canvas"))
        seen = {
            "links": links,
            "rows": len(driver.find_elements(By.CSS_SELECTOR, "#chain tbody tr")),
            "atm_rows": len(driver.find_elements(By.CSS_SELECTOR, "#chain tbody tr.atm")),
            "first": first, "later": later,
            "live": driver.find_element(By.ID, "live").text,
            "updates": driver.execute_script("return window.strikeflowPage.updates"),
            "summary": driver.execute_script(
                "return Object.fromEntries([...document.querySelectorAll('#summary div')]"
                ".map(d => [d.dataset.field, d.querySelector('b').textContent]))"),
        }
        driver.save_screenshot(str(screenshot))
        seen["console"] = driver.get_log("browser")
        return seen
    finally:
        driver.quit()


async def test_dashboard_page_renders_the_chain_updates_live_and_logs_no_errors(
    kafka_url: str, pg_dsn: str, redis_url: str, tmp_path: Path, unique_name: str
) -> None:
    env = {
        **os.environ,
        "STRIKEFLOW_KAFKA_URL": kafka_url, "STRIKEFLOW_PG_DSN": pg_dsn, "STRIKEFLOW_REDIS_URL": redis_url,
        "STRIKEFLOW_PG_SCHEMA": f"web_{unique_name}", "STRIKEFLOW_APP_ID": unique_name,
        "STRIKEFLOW_TICKS_TOPIC": f"{unique_name}-ticks", "STRIKEFLOW_BARS_TOPIC": f"{unique_name}-bars",
        "STRIKEFLOW_DATA_DIR": str(tmp_path / "data"), "STRIKEFLOW_STRIKES_AROUND_ATM": "6",
    }
    screenshot = Path(os.environ.get("STRIKEFLOW_SCREENSHOT") or tmp_path / "dashboard.png")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline.commands.cli", "demo", "--seconds", "240", "--speed", "30",
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    try:
        url = await asyncio.wait_for(_dashboard_url(proc, lines), 120)
        drain = asyncio.create_task(_keep_reading(proc, lines))
        chain = await asyncio.wait_for(_first_chain(url), 150)
        seen = await asyncio.to_thread(_look, url, chain["expiry"], screenshot)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.wait(), 120)
    drain.cancel()
    assert any(f"expiry={chain['expiry']}" in link for link in seen["links"])
    assert seen["rows"] >= 3 and seen["atm_rows"] == 1
    assert seen["later"] != seen["first"] and seen["updates"] > 0 and seen["live"] == "live"
    numbers = [t for t in seen["later"] if re.fullmatch(r"[+-]?[\d,]+(\.\d+)?", t)]
    assert len(numbers) > len(seen["later"]) / 2  # real figures, not dashes
    assert seen["summary"]["forward"] != "–" and seen["summary"]["PCR"] != "–"
    errors = [entry for entry in seen["console"] if entry["level"] == "SEVERE"]
    assert errors == []
    assert screenshot.stat().st_size > 10_000


async def _keep_reading(proc: asyncio.subprocess.Process, lines: list[str]) -> None:
    while raw := await proc.stdout.readline():
        lines.append(raw.decode(errors="replace"))
