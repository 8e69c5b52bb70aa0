"""Screenshot of the app on a shipped case: ``panel serve app/main.py`` driven by headless Chromium.

Starts the server on a free localhost port with the bundled cases
(``assets/data``) and the model zoo (``assets/models``), opens the page, waits
until the 3D view, the slices, the line scan and the metrics have drawn, and
saves the whole page as a small PNG (256-colour palette).

With ``--tour N`` the page steps through the first N steps of the guided tour ("Guided tour ▶")
and saves one screenshot per step (``--out`` with ``{step}`` in its name, e.g.
``docs/figures/app_tour_{step}.png``), each once the busy indicator reports the step drawn.

Usage::

    PYTHONPATH=. python scripts/app_screenshot.py [--out docs/figures/app.png] [--case cubic_sg195] [--k-shells 2]
    PYTHONPATH=. python scripts/app_screenshot.py --tour 6 --out "docs/figures/app_tour_{step}.png"
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from app.drive import CHROMIUM_ARGS, DEEP_TEXT_JS, free_port, link_cases, stop_process, wait_port

ROOT = Path(__file__).resolve().parents[1]


def _wait_text(page, css: str, needle: str, timeout_s: float) -> str:
    from playwright.sync_api import Error as PlaywrightError

    deadline = time.time() + timeout_s
    while True:
        try:  # the page can be busy for a while drawing a large 3D scene
            text = page.locator(css).first.evaluate(DEEP_TEXT_JS, timeout=60_000)
        except PlaywrightError:
            text = ""
        if needle in text:
            return text
        if time.time() > deadline:
            raise SystemExit(f"{needle!r} did not appear in {css} within {timeout_s:.0f} s")
        time.sleep(1)


def _wait_drawn(page, timeout_s: float) -> None:
    for css in (".elf-3d canvas", ".elf-slice-residual canvas", ".elf-slice-elf canvas", ".elf-line-plot canvas"):
        page.wait_for_selector(css, timeout=timeout_s * 1000)
    deadline = time.time() + timeout_s
    while page.get_by_text("omputing…").count() > 0:
        if time.time() > deadline:
            raise SystemExit(f"views still computing after {timeout_s:.0f} s")
        time.sleep(1)


def _wait_tracker(page, timeout_s: float) -> None:
    """Wait until the page's busy indicator (``.elf-busy``) says the last change is drawn."""
    deadline = time.time() + timeout_s
    while True:
        box = page.locator(".elf-busy").first
        busy, seq, drawn = (box.get_attribute(k) for k in ("data-busy", "data-seq", "data-drawn"))
        if busy == "0" and int(drawn or 0) >= int(seq or 0):
            return
        if time.time() > deadline:
            raise SystemExit("the page stayed busy")
        time.sleep(0.3)


def _small_png(png: bytes, max_width: int) -> bytes:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.width > max_width:
        img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
    out = io.BytesIO()
    # octree + dithering keeps the colour bars' gradients (median cut without dithering banded them)
    img.quantize(colors=256, method=Image.FASTOCTREE, dither=Image.FLOYDSTEINBERG).save(out, format="PNG", optimize=True)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures" / "app.png"))
    ap.add_argument(
        "--case", default=None,
        help="serve only this bundled case (file stem, e.g. fluid_p103_t0250), so the page opens on it with the 3D "
        "camera framed for its cell (default: all cases, the app's first one shown)",
    )
    ap.add_argument("--k-shells", type=int, default=0, help="move the k-shells slider to this value first")
    ap.add_argument("--k-predicted", action="store_true",
                    help="k-correction 'predicted (no reference)' (the shipped long-range model)")
    ap.add_argument("--residual", action="store_true", help="tick 'Residual isosurfaces'")
    ap.add_argument("--training", choices=["fluid", "crystals"], default="fluid",
                    help="the model's training data ('crystals': fluid + atomic crystals)")
    ap.add_argument("--width", type=int, default=1500)
    ap.add_argument("--height", type=int, default=1720, help="tall enough for the whole page (its main area scrolls)")
    ap.add_argument("--max-width", type=int, default=1400, help="the saved PNG is at most this wide")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for each drawing")
    ap.add_argument("--raw", default=None, help="also save the unreduced screenshot here")
    ap.add_argument("--tour", type=int, default=0,
                    help="step through this many guided-tour steps, one screenshot each ('{step}' in --out)")
    ap.add_argument("--teaching", action="store_true", help="switch teaching mode on first")
    ap.add_argument("--screening", type=float, nargs="*", default=None, metavar="X",
                    help="open the example screening run, then click its φ plot at these fractions of its width "
                    "(one screenshot after opening and one per click, '{step}' in --out)")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Debian chromium is not installed (apt-get install chromium)")
    port = free_port()
    import tempfile

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    tmp = tempfile.TemporaryDirectory(prefix="elfcore-screenshot-")
    if args.case:
        env["ELFCORE_DATA_DIR"] = str(link_cases([args.case], tmp.name))
    panel = Path(sys.executable).with_name("panel")
    proc = subprocess.Popen(
        [str(panel), "serve", "app/main.py", "--port", str(port), "--address", "127.0.0.1",
         "--session-token-expiration", "3600", "--unused-session-lifetime", "900000"],  # slow first session
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        if not wait_port(port, proc, 120):
            raise SystemExit("panel serve did not start")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(f"http://127.0.0.1:{port}/main", timeout=args.timeout * 1000)
            _wait_drawn(page, args.timeout)
            if args.training != "fluid":
                before = page.locator(".elf-metrics").first.evaluate(DEEP_TEXT_JS, timeout=60_000)
                page.locator(".elf-training button", has_text=args.training).first.click()
                deadline = time.time() + args.timeout
                while page.locator(".elf-metrics").first.evaluate(DEEP_TEXT_JS, timeout=60_000) == before:
                    if time.time() > deadline:
                        raise SystemExit("the metrics did not change after switching the training set")
                    time.sleep(1)
            if args.k_shells:
                handle = page.locator(".elf-n-shells .noUi-handle").first
                for _ in range(args.k_shells):
                    handle.press("ArrowRight")
                _wait_text(page, ".elf-metrics", f"k-corrected ({args.k_shells} shell", args.timeout)
            if args.k_predicted:
                page.locator(".elf-k-source button", has_text="predicted").first.click()
                _wait_text(page, ".elf-metrics", "k-corrected (predicted, no reference)", args.timeout)
                page.locator(".elf-view-field button", has_text="corrected").first.click()
                _wait_tracker(page, args.timeout)
            if args.residual:
                page.locator(".elf-show-residual input").first.check()
                _wait_text(page, ".elf-3d", "residual ±", args.timeout)
            _wait_text(page, ".elf-metrics", "MAE", args.timeout)
            if args.teaching:
                page.locator(".elf-teaching button").first.click()
                _wait_text(page, ".elf-teaching-text", "Guided tour", args.timeout)
            shots = []
            for step in range(1, args.tour + 1):
                page.locator(".elf-next-preset button").first.click()
                _wait_text(page, ".elf-message", f"Tour {step}/", args.timeout)
                _wait_tracker(page, args.timeout)
                _wait_text(page, ".elf-metrics", "MAE", args.timeout)
                _wait_tracker(page, args.timeout)
                time.sleep(2)  # let the last canvas frames settle
                page.mouse.move(0, 0)
                shots.append((step, page.screenshot(full_page=True)))
                print(f"tour step {step} captured", flush=True)
            if args.screening is not None:
                page.locator(".elf-example-screening button").first.click()
                _wait_text(page, ".elf-frame-summary", "Frame 1/", args.timeout)
                for step, fx in enumerate([None, *args.screening]):
                    if fx is not None:
                        canvas = page.locator(".elf-screening canvas").first
                        box = canvas.bounding_box()
                        page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * 0.5)
                        time.sleep(1)
                    _wait_tracker(page, args.timeout)
                    _wait_text(page, ".elf-metrics", "φ", args.timeout)
                    _wait_tracker(page, args.timeout)
                    time.sleep(2)
                    page.mouse.move(0, 0)
                    shots.append((step, page.screenshot(full_page=True)))
                    print(f"screening step {step} captured:", page.locator(".elf-frame-summary").first.evaluate(
                        DEEP_TEXT_JS), flush=True)
            if not shots:
                time.sleep(3)  # let the last canvas frames settle
                shots.append((0, page.screenshot(full_page=True)))
            browser.close()
    finally:
        tmp.cleanup()
        stop_process(proc)
    for step, png in shots:
        if args.raw:
            Path(args.raw.replace("{step}", str(step))).write_bytes(png)
        out = Path(args.out.replace("{step}", str(step)))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(_small_png(png, args.max_width))
        print(f"{out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
