"""Driving the served app from headless Chromium: the one copy of what the browser tests, the screenshot
script and the browser benchmark share (Chromium flags, a free port, waiting for ``panel serve``, the text of
a Panel view including its shadow roots). Run the scripts from the repository root with ``PYTHONPATH=.``.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["CHROMIUM_ARGS", "DEEP_TEXT_JS", "KEPT_JS", "free_port", "wait_port", "link_cases", "stop_process"]

#: Debian chromium, headless, with nothing that reaches the network on its own
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

#: JavaScript for ``locator.evaluate``: the visible text of an element, shadow roots included
DEEP_TEXT_JS = """(el) => {
    const parts = [];
    const walk = (node) => {
        if (node.nodeType === Node.TEXT_NODE) { parts.push(node.textContent); return; }
        if (node.nodeName === 'STYLE') return;
        if (node.shadowRoot) walk(node.shadowRoot);
        for (const child of node.childNodes) walk(child);
    };
    walk(el);
    return parts.join(' ').replace(/\\s+/g, ' ');
}"""


#: JavaScript for ``page.evaluate``: the 3D scene updates applied in place so far
#: (:class:`app.views.browser.SceneKeeper`), or null when the page has no such component
KEPT_JS = """() => { for (const doc of Bokeh.documents) for (const m of doc._all_models.values())
  if (m.data && m.data.kept !== undefined) return m.data.kept; return null; }"""


def free_port() -> int:
    """A free TCP port on localhost."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout_s: float, poll_s: float = 0.5) -> bool:
    """Wait until ``port`` accepts connections; False if ``proc`` exits or ``timeout_s`` passes first."""
    deadline = time.time() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return True
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                return False
            time.sleep(poll_s)


def link_cases(names, target, source=None) -> Path:
    """A data folder ``target/data`` holding links to the bundled cases ``names`` (file stems).

    ``source`` defaults to ``ELFCORE_DATA_DIR`` or the repository's ``assets/data``; a missing case
    stops the calling script with its path.
    """
    root = Path(__file__).resolve().parents[1]
    source = Path(source or os.environ.get("ELFCORE_DATA_DIR", root / "assets" / "data"))
    data = Path(target) / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name in names:
        nc = source / f"{name}.nc"
        if not nc.is_file():
            raise SystemExit(f"no bundled case {nc}")
        (data / nc.name).symlink_to(nc.resolve())
    return data


def stop_process(proc: subprocess.Popen, timeout_s: float = 15) -> None:
    """Terminate a server process, killing it when it has not exited within ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
