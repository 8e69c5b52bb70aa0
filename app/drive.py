"""Driving the served app from headless Chromium: the one copy of what the browser tests, the screenshot
script and the browser benchmark share (Chromium flags, a free port, waiting for ``panel serve``, the text of
a Panel view including its shadow roots). Run the scripts from the repository root with ``PYTHONPATH=.``.
"""
from __future__ import annotations

import socket
import subprocess
import time

__all__ = ["CHROMIUM_ARGS", "DEEP_TEXT_JS", "free_port", "wait_port"]

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
