"""The app measured in a real browser: time from each control's input to the last view drawn.

Starts ``panel serve app/main.py`` on a free localhost port with two bundled fluid test cases
(at their native grids) and the shipped models, opens the page in headless Debian Chromium
(Playwright, ``executable_path=shutil.which("chromium")``; no browser is downloaded) and

- times the first page (from the request to the 3D view, both slices, the line scan and the
  metrics drawn);
- for every control, times each input until the page's busy indicator (``.elf-busy``,
  :class:`app.views.browser.DrawTracker`) reports the resulting change drawn: the 3D scene
  synchronized in the browser, no page update for 120 ms and two painted frames. A control's
  first use of a setting (a new model, k-basis or squeeze value, another case) is reported as
  ``cold``; moves to settings already computed as ``cached``;
- counts the JavaScript console errors and the requests to any host other than the server;
- with ``--cpu-profile``, records a Chrome CPU profile (DevTools protocol ``Profiler``) of each
  input and reports where the page's main thread spent its time (self time per function).

Prints a table and one JSON object (also written to ``--json``).

Usage::

    PYTHONPATH=. python benchmarks/app_browser.py [--cases fluid_p076_t0450,fluid_p115_t0300] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.drive import CHROMIUM_ARGS, DEEP_TEXT_JS, KEPT_JS, free_port, link_cases, stop_process, wait_port
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]

# The busy indicator lives in a shadow root: find it once, then read its data attributes.
_TRACKER = """() => {
  if (!window.__elfBusy || !window.__elfBusy.isConnected) {
    const find = (root) => {
      const el = root.querySelector('.elf-busy');
      if (el) return el;
      for (const n of root.querySelectorAll('*')) {
        if (n.shadowRoot) { const f = find(n.shadowRoot); if (f) return f; }
      }
      return null;
    };
    window.__elfBusy = find(document);
  }
  const el = window.__elfBusy;
  return el ? {busy: el.dataset.busy, seq: Number(el.dataset.seq), drawn: Number(el.dataset.drawn)} : null;
}"""
_DONE = """(before) => {
  const el = window.__elfBusy;
  return !!el && el.isConnected && el.dataset.busy === '0' && Number(el.dataset.drawn) > before;
}"""


def watch_sockets(page) -> list:
    """Record ``(time, "sent" | "received", bytes)`` of every websocket frame of ``page`` (call before goto)."""
    frames: list[tuple[float, str, int]] = []

    def size(payload) -> int:
        return len(payload) if isinstance(payload, (bytes, str)) else 0

    def on_socket(ws) -> None:
        ws.on("framesent", lambda payload: frames.append((time.perf_counter(), "sent", size(payload))))
        ws.on("framereceived", lambda payload: frames.append((time.perf_counter(), "received", size(payload))))

    page.on("websocket", on_socket)
    return frames


class Bench:
    """One page and the measurements taken on it.

    ``only``: measure just these controls (the inputs of the others are not made);
    ``probe``: also record how many 3D scene updates each input applied in place;
    ``frames``: the page's websocket frames (:func:`watch_sockets`), to split each input's time
    into the server's part (until its last message arrived) and the browser's (drawing after it).
    """

    def __init__(self, page, timeout_s: float, only: set[str] | None = None, probe: bool = False,
                 frames: list | None = None, cdp=None):
        self.page = page
        self.cdp = cdp
        self.timeout_s = timeout_s
        self.rows: list[dict] = []
        self.only = only
        self.probe = probe and page.evaluate(KEPT_JS) is not None
        # websocket frames (time, "sent"/"received", bytes): where an input's time goes
        self.frames = frames if frames is not None else []

    def _split(self, t0: float, t1: float) -> dict:
        """Server and browser share of one input: messages between the input (t0) and drawn (t1)."""
        got = [(t, n) for t, way, n in self.frames if t0 <= t <= t1 and way == "received"]
        if not got:
            return {}
        return {"first_message_s": round(got[0][0] - t0, 3), "last_message_s": round(got[-1][0] - t0, 3),
                "messages": len(got), "received_kb": round(sum(n for _, n in got) / 1024, 1),
                "timeline": [[round(t - t0, 3), n] for t, n in got]}

    def text(self, css: str) -> str:
        return self.page.locator(css).first.evaluate(DEEP_TEXT_JS)

    def tracker(self) -> dict:
        state = self.page.evaluate(_TRACKER)
        if state is None:
            raise SystemExit("no busy indicator (.elf-busy) on the page")
        return state

    def measure(self, control: str, what: str, action, kind: str = "cached") -> float | None:
        """Run ``action`` and time it until the page reports the change drawn (None: no change in time)."""
        if self.only is not None and control not in self.only:
            return None
        before = self.tracker()["seq"]
        kept = self.page.evaluate(KEPT_JS) if self.probe else None
        if self.cdp is not None:
            self.cdp.send("Profiler.start")
        t0 = time.perf_counter()
        action()
        try:
            self.page.wait_for_function(_DONE, arg=before, polling=20, timeout=self.timeout_s * 1000)
            dt = time.perf_counter() - t0
        except Exception:  # noqa: BLE001 - a timeout is a result here
            dt = None
        row = {"control": control, "input": what, "kind": kind, "seconds": dt}
        if self.cdp is not None:
            row["browser_profile"] = profile_summary(self.cdp.send("Profiler.stop")["profile"])
        extra = ""
        if dt is not None:
            row.update(self._split(t0, t0 + dt))
            if "last_message_s" in row:
                extra += (f"  (server messages {row['first_message_s']:.2f}–{row['last_message_s']:.2f} s, "
                          f"{row['messages']} msgs, {row['received_kb']:.0f} kB)")
        if self.probe:
            row["in_place_3d_updates"] = (self.page.evaluate(KEPT_JS) or 0) - (kept or 0)
            extra = f"  (3D updated in place: {row['in_place_3d_updates']})"
        if "browser_profile" in row:
            extra += f"  (browser main thread busy {row['browser_profile']['busy_s']:.2f} s)"
        self.rows.append(row)
        print(f"  {control:<16} {what:<28} {kind:<6} {'timeout' if dt is None else f'{dt:7.2f} s'}{extra}",
              flush=True)
        time.sleep(0.3)
        return dt

    # inputs ---------------------------------------------------------------
    def key(self, widget: str, key: str):
        return lambda: self.page.locator(f".elf-{widget} .noUi-handle").first.press(key)

    def button(self, widget: str, label: str):
        return lambda: self.page.locator(f".elf-{widget} button", has_text=label).first.click()

    def check(self, widget: str, on: bool):
        def act():
            box = self.page.locator(f".elf-{widget} input").first
            box.check() if on else box.uncheck()
        return act

    def select(self, widget: str, label: str | None = None, value: str | None = None):
        def act():
            sel = self.page.locator(f".elf-{widget} select").first
            if label is not None:
                sel.select_option(label=label)
            else:
                sel.select_option(value)
        return act

    def options(self, widget: str) -> list[str]:
        return self.page.locator(f".elf-{widget} select option").all_inner_texts()

    def click_plot(self, css: str, fx: float, fy: float = 0.5):
        def act():
            canvas = self.page.locator(css).first
            canvas.scroll_into_view_if_needed()
            box = canvas.bounding_box()
            self.page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
        return act

    def click_slice(self, fx: float, fy: float):
        return self.click_plot(".elf-slice-elf canvas", fx, fy)


def run_controls(b: Bench, cases: list[str], upload: Path) -> None:
    m = b.measure
    for _ in range(2):
        m("iso", "→ (one step)", b.key("iso", "ArrowRight"))
        m("iso", "← (one step)", b.key("iso", "ArrowLeft"))
    m("show_residual", "tick", b.check("show-residual", True))
    m("residual_iso", "→", b.key("residual-iso", "ArrowRight"))
    m("residual_iso", "←", b.key("residual-iso", "ArrowLeft"))
    m("show_residual", "untick", b.check("show-residual", False))
    m("view_field", "reference", b.button("view-field", "reference"))
    m("view_field", "prediction", b.button("view-field", "prediction"))
    m("show_atoms", "untick", b.check("show-atoms", False))
    m("show_atoms", "tick", b.check("show-atoms", True))
    m("show_cell", "untick", b.check("show-cell", False))
    m("show_cell", "tick", b.check("show-cell", True))
    for mode in ("a", "b", "c"):
        m("slice_mode", mode, b.button("slice-mode", mode))
    for key in ("ArrowRight", "ArrowLeft", "ArrowRight"):
        m("slice_position", key.replace("Arrow", ""), b.key("slice-position", key))
    m("slice_mode", "atoms", b.button("slice-mode", "atoms"))
    opts = b.options("plane-atom-3")
    m("plane_atom_3", f"atom {opts[5]}", b.select("plane-atom-3", label=opts[5]))
    m("plane_atom_3", f"atom {opts[2]}", b.select("plane-atom-3", label=opts[2]))
    m("slice_mode", "c", b.button("slice-mode", "c"))
    opts = b.options("line-atom-2")
    m("line_atom_2", f"atom {opts[7]}", b.select("line-atom-2", label=opts[7]))
    m("line_atom_1", f"atom {opts[3]}", b.select("line-atom-1", label=opts[3]))
    b.click_slice(0.3, 0.3)()
    time.sleep(1.0)
    m("slice click", "second point (line)", b.click_slice(0.7, 0.6))
    m("line_source", "atoms", b.button("line-source", "atoms"))
    m("n_shells", "0 → 1", b.key("n-shells", "ArrowRight"), "cold")
    m("n_shells", "1 → 2", b.key("n-shells", "ArrowRight"), "cold")
    m("n_shells", "2 → 1", b.key("n-shells", "ArrowLeft"))
    m("n_shells", "1 → 2", b.key("n-shells", "ArrowRight"))
    m("view_field", "corrected", b.button("view-field", "corrected"))
    m("view_field", "prediction", b.button("view-field", "prediction"))
    m("k_max", "→ 4.0 (End)", b.key("k-max", "End"), "cold")
    m("k_basis", "shells", b.button("k-basis", "shells"))
    m("k_basis", "k_max", b.button("k-basis", "k_max"))
    m("k_basis", "shells", b.button("k-basis", "shells"))
    m("r_cut", "←", b.key("r-cut", "ArrowLeft"), "cold")
    m("r_cut", "→ (back)", b.key("r-cut", "ArrowRight"))
    m("r_cut", "←", b.key("r-cut", "ArrowLeft"))
    m("r_cut", "→ (back)", b.key("r-cut", "ArrowRight"))
    m("l_max", "←", b.key("l-max", "ArrowLeft"), "cold")
    m("l_max", "→ (back)", b.key("l-max", "ArrowRight"))
    m("l_max", "←", b.key("l-max", "ArrowLeft"))
    m("l_max", "→ (back)", b.key("l-max", "ArrowRight"))
    m("training", "crystals", b.button("training", "crystals"), "cold")
    m("training", "fluid", b.button("training", "fluid"))
    m("training", "crystals", b.button("training", "crystals"))
    m("training", "fluid", b.button("training", "fluid"))
    m("squeeze", "← (0.99)", b.key("squeeze", "ArrowLeft"), "cold")
    m("squeeze", "→ (1.00)", b.key("squeeze", "ArrowRight"))
    m("squeeze", "← (0.99)", b.key("squeeze", "ArrowLeft"))
    m("squeeze", "→ (1.00)", b.key("squeeze", "ArrowRight"))
    m("teaching", "on", b.button("teaching", "Teaching"))
    m("teaching", "off", b.button("teaching", "Teaching"))
    labels = b.options("case")
    other = next(lbl for lbl in labels if lbl.startswith(cases[1]))
    first = next(lbl for lbl in labels if lbl.startswith(cases[0]))
    m("case", cases[1], b.select("case", label=other), "cold")
    m("case", cases[0], b.select("case", label=first))
    m("case", cases[1], b.select("case", label=other))
    m("guided tour", "next step", lambda: b.page.locator(".elf-next-preset button").first.click())
    m("guided tour", "next step", lambda: b.page.locator(".elf-next-preset button").first.click())
    if b.page.locator(".elf-example-screening button").count():
        m("screening", "open the example run", lambda: b.page.locator(".elf-example-screening button").first.click(),
          "cold")
        m("screening", "plot click (new frame)", b.click_plot(".elf-screening canvas", 0.6), "cold")
        m("screening", "plot click (first frame)", b.click_plot(".elf-screening canvas", 0.1))
        m("screening", "plot click (back)", b.click_plot(".elf-screening canvas", 0.6))
    m("upload", upload.name, lambda: b.page.locator(".elf-upload input[type=file]").first.set_input_files(str(upload)),
      "cold")


def profile_summary(profile: dict, top: int = 12) -> dict:
    """Self time of a Chrome CPU profile per function (``name (file:line)``), largest first, in seconds.

    ``busy_s`` is the sampled time outside ``(idle)``/``(program)``/``(garbage collector)``, ``gc_s``
    the garbage collector's share.
    """
    nodes = {n["id"]: n for n in profile["nodes"]}
    dts = profile.get("timeDeltas", [])
    samples = profile.get("samples", [])
    self_us: dict[str, float] = {}
    for sid, dt in zip(samples, dts):
        frame = nodes[sid]["callFrame"]
        url = frame.get("url", "").rsplit("/", 1)[-1]
        name = f"{frame.get('functionName') or '(anonymous)'} ({url}:{frame.get('lineNumber', -1) + 1})" if url \
            else frame.get("functionName") or "(anonymous)"
        self_us[name] = self_us.get(name, 0.0) + dt
    busy = sum(v for k, v in self_us.items() if k not in ("(idle)", "(program)", "(garbage collector)"))
    ranked = sorted(self_us.items(), key=lambda kv: -kv[1])[:top]
    return {"busy_s": round(busy / 1e6, 3), "gc_s": round(self_us.get("(garbage collector)", 0.0) / 1e6, 3),
            "top": [[k, round(v / 1e6, 3)] for k, v in ranked]}


def summarize(rows: list[dict]) -> list[dict]:
    out: dict[str, dict] = {}
    for r in rows:
        d = out.setdefault(r["control"], {"control": r["control"], "cached": [], "cold": [], "timeouts": 0})
        if r["seconds"] is None:
            d["timeouts"] += 1
        else:
            d[r["kind"]].append(r["seconds"])
    table = []
    for d in out.values():
        table.append({
            "control": d["control"],
            "cached_median_s": round(statistics.median(d["cached"]), 3) if d["cached"] else None,
            "cached_max_s": round(max(d["cached"]), 3) if d["cached"] else None,
            "cold_s": [round(x, 2) for x in d["cold"]],
            "n": len(d["cached"]) + len(d["cold"]),
            "timeouts": d["timeouts"],
        })
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="fluid_p076_t0450,fluid_p115_t0300",
                    help="two bundled case names (file stems): the first is measured, the second is the case switch")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one change")
    ap.add_argument("--json", default=None, help="also write the JSON result here")
    ap.add_argument("--width", type=int, default=1500)
    ap.add_argument("--height", type=int, default=1100)
    ap.add_argument("--controls", default=None,
                    help="comma-separated controls to measure (e.g. iso,show_cell); the others are skipped")
    ap.add_argument("--probe", action="store_true",
                    help="also record how many 3D scene updates each input applied in place (SceneKeeper)")
    ap.add_argument("--trace", default=None,
                    help="write a Chrome performance trace (devtools timeline) of the measured inputs to this file")
    ap.add_argument("--cpu-profile", action="store_true",
                    help="record a Chrome CPU profile of each input (self time per function, in the JSON rows)")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Debian chromium is not installed (apt-get install chromium)")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if len(cases) != 2:
        raise SystemExit("--cases needs two case names")
    tmp = tempfile.TemporaryDirectory(prefix="elfcore-app-browser-")
    data = link_cases(cases, tmp.name)
    import ase.io

    from elfcore.grid import case_atoms
    from elfcore.io import read_case

    upload = Path(tmp.name) / "POSCAR"
    ase.io.write(upload, case_atoms(read_case(data / f"{cases[0]}.nc")), format="vasp")

    port = free_port()
    env = dict(os.environ, ELFCORE_DATA_DIR=str(data), PYTHONPATH=str(ROOT))
    panel = Path(sys.executable).with_name("panel")
    log = open(Path(tmp.name) / "serve.log", "wb")
    t_server = time.perf_counter()
    proc = subprocess.Popen(
        [str(panel), "serve", "app/main.py", "--port", str(port), "--address", "127.0.0.1",
         "--websocket-max-message-size", str(128 * 2**20),
         # the first session can take minutes on a loaded machine (imports, first prediction): the
         # page's session token must outlive it (Bokeh's default is 300 s)
         "--session-token-expiration", "3600", "--unused-session-lifetime", "900000"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    result: dict = {"cases": cases, "machine": f"{os.cpu_count()} CPUs, {platform.platform()}"}
    try:
        if not wait_port(port, proc, 180):
            raise SystemExit("panel serve did not start")
        result["server_start_s"] = round(time.perf_counter() - t_server, 1)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            errors: list[str] = []
            external: list[str] = []
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))

            def on_request(req):
                host = urlparse(req.url).hostname
                if req.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost", None):
                    return
                external.append(req.url)

            page.on("request", on_request)
            frames = watch_sockets(page)
            t0 = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/main", timeout=args.timeout * 1000)
            for css in (".elf-3d canvas", ".elf-slice-residual canvas", ".elf-slice-elf canvas",
                        ".elf-line-plot canvas"):
                page.wait_for_selector(css, timeout=args.timeout * 1000)
            only = None if args.controls is None else {c.strip() for c in args.controls.split(",") if c.strip()}
            b = Bench(page, args.timeout)
            deadline = time.time() + args.timeout
            while (page.get_by_text("omputing…").count() > 0 or "MAE" not in b.text(".elf-metrics")
                   or b.tracker()["busy"] != "0"):
                if time.time() > deadline:
                    raise SystemExit("the first page did not finish drawing")
                time.sleep(0.05)
            page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
            result["first_page_s"] = round(time.perf_counter() - t0, 2)
            print(f"first page: {result['first_page_s']} s", flush=True)
            time.sleep(2)
            cdp = None
            if args.cpu_profile:
                cdp = page.context.new_cdp_session(page)
                cdp.send("Profiler.enable")
                cdp.send("Profiler.setSamplingInterval", {"interval": 500})
            b = Bench(page, args.timeout, only=only, probe=args.probe, frames=frames, cdp=cdp)
            if args.trace:
                browser.start_tracing(page=page, path=args.trace, screenshots=False,
                                      categories=["devtools.timeline", "disabled-by-default-devtools.timeline",
                                                  "v8.execute", "blink", "cc", "gpu", "toplevel"])
            run_controls(b, cases, upload)
            if args.trace:
                browser.stop_tracing()
            result["console_errors"] = len(errors)
            result["console_error_samples"] = errors[:10]
            result["external_requests"] = len(external)
            result["external_request_samples"] = external[:10]
            result["rows"] = b.rows
            result["table"] = summarize(b.rows)
            browser.close()
    finally:
        stop_process(proc)
        log.close()
        server_log = (Path(tmp.name) / "serve.log").read_text(errors="replace")
        result["server_tracebacks"] = server_log.count("Traceback")
        if result["server_tracebacks"]:  # show the first one: the server's errors are part of the result
            start = server_log.index("Traceback")
            print("server log:\n" + "\n".join(server_log[start:].splitlines()[:30]), flush=True)
        tmp.cleanup()
    print()
    print("| control | cached median (s) | cached max (s) | cold (s) | inputs | timeouts |")
    print("|---|---|---|---|---|---|")
    for r in result["table"]:
        cold = ", ".join(f"{x:.1f}" for x in r["cold_s"]) or "–"
        med = "–" if r["cached_median_s"] is None else f"{r['cached_median_s']:.2f}"
        mx = "–" if r["cached_max_s"] is None else f"{r['cached_max_s']:.2f}"
        print(f"| {r['control']} | {med} | {mx} | {cold} | {r['n']} | {r['timeouts']} |")
    print(f"\nfirst page {result['first_page_s']} s; console errors {result['console_errors']}; "
          f"external requests {result['external_requests']}")
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
