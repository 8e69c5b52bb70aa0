"""The app's page loads no web fonts (it must work without internet access)."""
import re

import panel as pn

from app.main import offline_fonts


def _external_hosts(html: str) -> set:
    return set(re.findall(r"https?://([^/\"' ]+)", html))


def test_template_links_no_web_font(tmp_path):
    page = tmp_path / "page.html"
    pn.template.FastListTemplate(title="t", main=[pn.pane.Markdown("x")], **offline_fonts()).save(page)
    html = page.read_text()
    assert "fonts.googleapis" not in html and "fonts.gstatic" not in html
    assert "fonts.googleapis.com" not in _external_hosts(html)
    # calling it again changes nothing
    assert offline_fonts() == offline_fonts()
