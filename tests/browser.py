"""The system's Chromium for the tests that drive a page through Playwright (no browser is downloaded):
where it is (None: those tests skip) and how it is started."""

from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium as root in a container, with nothing reaching for the network (a closed network refuses it anyway).
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
