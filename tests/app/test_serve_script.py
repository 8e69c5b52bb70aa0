"""`scripts/elfcore.sh serve` sets up only what serving needs."""
from __future__ import annotations

import re
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "elfcore.sh"


def _branch(text: str, name: str) -> str:
    m = re.search(rf"^\s+{name}\)\n(.*?);;", text, flags=re.S | re.M)
    assert m, f"no '{name})' branch in {SCRIPT.name}"
    return m.group(1)


def test_serve_installs_no_debian_package():
    text = SCRIPT.read_text()
    serve = _branch(text, "serve")
    assert "py_install" in serve
    assert not re.search(r"\b(setup|apt_install|apt-get)\b", serve), serve
    for name in ("setup", "test"):  # the full set up keeps installing the reference codes
        assert re.search(r"\bsetup\b", _branch(text, name))
    assert "cp2k" in text and "quantum-espresso" in text
