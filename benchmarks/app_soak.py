"""Soak check of the served app: N concurrent headless browser sessions driving it for a bounded time.

Starts ``panel serve app/main.py`` on a free loopback port with two bundled cases (``--cases``; the same
server settings as ``benchmarks/app_browser.py``), opens the page in ``--sessions`` headless Debian
Chromium sessions at once (Playwright, ``executable_path=shutil.which("chromium")``, one browser per
session, each driven from its own thread; no browser is downloaded) and, once every page has drawn,
lets each session loop over a fixed cycle of inputs (iso value, ELF shown, atoms, k-shells, slice
plane and position, line atom, residual isosurfaces, cell box, case switch) for ``--seconds``. After
each input the session waits for the page's busy indicator (``.elf-busy``) to report the change drawn;
an input not drawn within ``--action-timeout`` is counted as a timeout, one still in flight when the
time is up as unfinished. Meanwhile the resident memory of the server process and its children is
sampled every ``--sample-s`` seconds (psutil if installed, else /proc).

Reports per session the page-load time, the inputs drawn, timeouts, unfinished and failed inputs,
JavaScript console errors and page errors (count and first messages) and whether the session died;
for the server its memory (at start, when the soak starts, peak, at the end, after the browsers
closed, MiB) and the number of lines with "Traceback" in its stderr. Prints a table and one JSON
object (also written to ``--json``).

Usage::

    PYTHONPATH=. python benchmarks/app_soak.py --sessions 4 --seconds 600 --json out.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from app.drive import CHROMIUM_ARGS, free_port, link_cases, stop_process, wait_port

ROOT = Path(__file__).resolve().parents[1]


def _load_app_browser():
    """benchmarks/ is no package: load the browser benchmark (its Bench page driver) from its path."""
    spec = importlib.util.spec_from_file_location("elfcore_app_browser", Path(__file__).with_name("app_browser.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


app_browser = _load_app_browser()

GRACE_S = 10.0  # an input in flight when the time is up may still finish this long after it
N_SAMPLES = 5  # messages kept per kind in the report


# memory ---------------------------------------------------------------------------------------------
def _proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _proc_descendants(pid: int) -> list[int]:
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        todo += kids
    return found


def tree_rss_mib(pid: int) -> float | None:
    """Resident memory of ``pid`` and all its descendants (MiB); None once the process is gone."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            return None
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20
    try:
        total_kib = _proc_rss_kib(pid)
    except OSError:
        return None
    for child in _proc_descendants(pid):
        try:
            total_kib += _proc_rss_kib(child)
        except OSError:
            pass
    return total_kib / 1024


class Sampler(threading.Thread):
    """Samples the server's memory every ``every_s`` seconds until stopped."""

    def __init__(self, pid: int, every_s: float, t0: float):
        super().__init__(daemon=True, name="memory-sampler")
        self.pid, self.every_s, self.t0 = pid, every_s, t0
        self.samples: list[tuple[float, float]] = []
        self.halt = threading.Event()

    def sample(self) -> float | None:
        mib = tree_rss_mib(self.pid)
        if mib is not None:
            self.samples.append((round(time.perf_counter() - self.t0, 1), round(mib, 1)))
        return mib

    def run(self):
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.every_s)


# one browser session --------------------------------------------------------------------------------
class Clock:
    """The soak window shared by all sessions: ``go`` is set once every page has drawn."""

    def __init__(self):
        self.go = threading.Event()
        self.stop = threading.Event()
        self.deadline = float("inf")


class Session(threading.Thread):
    """One headless Chromium with one page, driven from its own thread (Playwright's sync API per thread)."""

    def __init__(self, index: int, url: str, clock: Clock, args):
        super().__init__(daemon=True, name=f"session-{index}")
        self.index, self.url, self.clock, self.args = index, url, clock, args
        self.ready = threading.Event()
        self.console: list[str] = []
        self.page_errors: list[str] = []
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.actions: dict[str, int] = {}
        self.timeouts: list[str] = []
        self.unfinished: list[str] = []
        self.stopped_at: float | None = None  # perf_counter when the session stopped driving
        self.load_s: float | None = None
        self.died: str | None = None
        self.crashed = False
        self._up: dict[str, bool] = {}

    # Playwright runs in here ------------------------------------------------------------------------
    def run(self):
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                             args=CHROMIUM_ARGS)
                try:
                    self._drive(browser)
                finally:
                    browser.close()
        except BaseException as exc:  # noqa: BLE001 - a dead session is a result
            if self.died is None:
                self.died = f"{type(exc).__name__}: {exc}".strip()[:300]
        finally:
            self.ready.set()

    def _drive(self, browser):
        page = browser.new_page(viewport={"width": self.args.width, "height": self.args.height})
        page.on("console", lambda msg: self.console.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("crash", lambda _page: setattr(self, "crashed", True))
        page.set_default_timeout(self.args.action_timeout * 1000)
        b = app_browser.Bench(page, self.args.action_timeout)
        self._load(page, b)
        self.ready.set()
        self.clock.go.wait()
        cycle = self._cycle(b)
        step = self.index  # sessions start at different places in the cycle
        try:
            self._loop(page, b, cycle, step)
        finally:
            self.stopped_at = time.perf_counter()

    def _loop(self, page, b, cycle, step):
        failures_in_row = 0
        while not self.clock.stop.is_set() and time.time() < self.clock.deadline:
            name, make = cycle[step % len(cycle)]
            step += 1
            label = "?"
            # no Playwright call may outlast the soak window (or one input's timeout)
            left = self.clock.deadline + GRACE_S - time.time()
            page.set_default_timeout(max(1.0, min(self.args.action_timeout, left)) * 1000)
            try:
                label, action = make()
                outcome = self._act(page, b, action)
            except Exception as exc:  # noqa: BLE001 - a failed input is counted, the session goes on
                if self.crashed or page.is_closed():
                    raise
                if self.clock.stop.is_set() or time.time() > self.clock.deadline:
                    self.unfinished.append(f"{name} {label}")
                    return
                failures_in_row += 1
                self.failures.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                if failures_in_row >= 5:
                    self.died = "5 inputs in a row failed"
                    return
                continue
            failures_in_row = 0
            if outcome == "drawn":
                self.actions[f"{name} {label}"] = self.actions.get(f"{name} {label}", 0) + 1
            elif outcome == "timeout":
                self.timeouts.append(f"{name} {label}")
                self._settle(page)
            else:
                self.unfinished.append(f"{name} {label}")

    def _load(self, page, b):
        t0 = time.perf_counter()
        limit = time.time() + self.args.load_timeout
        page.goto(self.url, timeout=self.args.load_timeout * 1000)
        for css in (".elf-3d canvas", ".elf-slice-elf canvas", ".elf-line-plot canvas"):
            page.wait_for_selector(css, timeout=max(1.0, limit - time.time()) * 1000)
        while True:
            state = page.evaluate(app_browser._TRACKER)
            if state and state["busy"] == "0" and "MAE" in b.text(".elf-metrics"):
                break
            if self.clock.stop.is_set() or time.time() > limit:
                raise TimeoutError(f"the first page was not drawn within {self.args.load_timeout:.0f} s")
            time.sleep(0.25)
        self.load_s = round(time.perf_counter() - t0, 1)
        print(f"session {self.index}: page drawn in {self.load_s} s", flush=True)

    def _act(self, page, b, action) -> str:
        """Run one input; 'drawn', 'timeout' (not drawn in --action-timeout) or 'unfinished' (time is up)."""
        before = b.tracker()["seq"]
        t0 = time.perf_counter()
        action()
        give_up = time.time() + self.args.action_timeout
        while True:
            now = time.time()
            if self.clock.stop.is_set() or now > self.clock.deadline + GRACE_S:
                return "unfinished"
            if now > give_up:
                return "timeout"
            wait_s = min(5.0, give_up - now, self.clock.deadline + GRACE_S - now)
            try:
                page.wait_for_function(app_browser._DONE, arg=before, polling=100, timeout=max(wait_s, 0.1) * 1000)
            except Exception:  # noqa: BLE001 - not drawn yet: look at the clock again
                if self.crashed or page.is_closed():
                    raise
                continue
            self.latencies.append(time.perf_counter() - t0)
            time.sleep(0.2)
            return "drawn"

    def _settle(self, page):
        """After a timeout, wait (within the soak window) until the page is idle before the next input."""
        while not self.clock.stop.is_set() and time.time() < self.clock.deadline:
            state = page.evaluate(app_browser._TRACKER)
            if state and state["busy"] == "0":
                return
            time.sleep(1.0)

    # the inputs: each returns (label, action) chosen from the page's current state ----------------
    def _cycle(self, b) -> list[tuple[str, object]]:
        page = b.page

        def slider(widget):
            def make():
                handle = page.locator(f".elf-{widget} .noUi-handle").first
                now, lo, hi = (handle.get_attribute(a) for a in ("aria-valuenow", "aria-valuemin", "aria-valuemax"))
                up = self._up.get(widget, True)
                if now is not None and hi is not None and float(now) >= float(hi):
                    up = False
                elif now is not None and lo is not None and float(now) <= float(lo):
                    up = True
                self._up[widget] = not up
                key = "ArrowRight" if up else "ArrowLeft"
                return ("→" if up else "←"), b.key(widget, key)
            return make

        def checkbox(widget):
            def make():
                on = not page.locator(f".elf-{widget} input").first.is_checked()
                return ("tick" if on else "untick"), b.check(widget, on)
            return make

        def buttons(widget, choices):
            def make():
                active = page.locator(f".elf-{widget} button").evaluate_all(
                    "els => els.filter(e => e.classList.contains('bk-active')).map(e => e.textContent.trim())")
                label = next(c for c in choices if c not in active)
                return label, b.button(widget, label)
            return make

        def select_next(widget):
            def make():
                current, options = page.locator(f".elf-{widget} select").first.evaluate(
                    "s => [s.value, Array.from(s.options).map(o => [o.value, o.text])]")
                values = [v for v, _ in options]
                i = values.index(current) if current in values else -1
                value, text = options[(i + 1) % len(options)]
                return text, b.select(widget, value=value)
            return make

        return [  # the light inputs first, the ones that compute (k-shells, another case) last
            ("show_atoms", checkbox("show-atoms")),
            ("view_field", buttons("view-field", ("reference", "prediction"))),
            ("iso", slider("iso")),
            ("slice_mode", buttons("slice-mode", ("a", "b", "c"))),
            ("show_cell", checkbox("show-cell")),
            ("slice_position", slider("slice-position")),
            ("line_atom_1", select_next("line-atom-1")),
            ("show_residual", checkbox("show-residual")),
            ("n_shells", slider("n-shells")),
            ("case", select_next("case")),
        ]

    def report(self) -> dict:
        lat = self.latencies
        return {
            "session": self.index,
            "load_s": self.load_s,
            "actions": sum(self.actions.values()),
            "actions_by_input": dict(sorted(self.actions.items())),
            "timeouts": len(self.timeouts),
            "timeout_inputs": self.timeouts[:N_SAMPLES],
            "unfinished": len(self.unfinished),
            "unfinished_inputs": self.unfinished,
            "failed_inputs": len(self.failures),
            "failed_input_samples": self.failures[:N_SAMPLES],
            "median_s": round(statistics.median(lat), 2) if lat else None,
            "max_s": round(max(lat), 2) if lat else None,
            "console_errors": len(self.console),
            "console_error_samples": self.console[:N_SAMPLES],
            "page_errors": len(self.page_errors),
            "page_error_samples": self.page_errors[:N_SAMPLES],
            "died": self.died,
        }


# the server -----------------------------------------------------------------------------------------
def serve(cases: list[str], work: Path, stack) -> tuple[subprocess.Popen, int, Path]:
    """``panel serve app/main.py`` on a free loopback port over a data dir holding only ``cases``."""
    data = link_cases(cases, work)
    port = free_port()
    stdout = stack(open(work / "serve.out", "wb"))
    stderr_path = work / "serve.err"
    stderr = stack(open(stderr_path, "wb"))
    command = [
        str(Path(sys.executable).with_name("panel")), "serve", "app/main.py",
        "--address", "127.0.0.1", "--port", str(port),
        "--websocket-max-message-size", str(128 * 2**20),
        "--session-token-expiration", "3600", "--unused-session-lifetime", "900000",
    ]
    env = {**os.environ, "ELFCORE_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout, stderr=stderr)
    return proc, port, stderr_path


def tracebacks(stderr_path: Path) -> tuple[int, list[str]]:
    """Lines with "Traceback" in the server's stderr and, for the first few, the exception line ending each."""
    try:
        lines = stderr_path.read_text(errors="replace").splitlines()
    except OSError:
        return 0, []
    count, samples = 0, []
    for i, line in enumerate(lines):
        if "Traceback" not in line:
            continue
        count += 1
        if len(samples) < N_SAMPLES:
            tail = next((x for x in lines[i + 1:] if x and not x[0].isspace()), line)
            samples.append(tail[:300])
    return count, samples


def _stop_descendants(grace_s: float = 5.0) -> None:
    """End what this script started and left running (Playwright drivers, browsers), by pid."""
    try:
        import psutil
    except ImportError:
        return
    kids = psutil.Process().children(recursive=True)
    for p in kids:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(kids, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def _sigterm(_signum, _frame):
    raise KeyboardInterrupt


def _mib(x):
    return "–" if x is None else f"{x:.0f}"


def print_report(result: dict) -> None:
    print()
    print("| session | load (s) | inputs drawn | timeouts | unfinished | failed | median (s) | max (s) "
          "| console errors | page errors | died |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in result["sessions"]:
        print(f"| {s['session']} | {s['load_s'] if s['load_s'] is not None else '–'} | {s['actions']} "
              f"| {s['timeouts']} | {s['unfinished']} | {s['failed_inputs']} "
              f"| {s['median_s'] if s['median_s'] is not None else '–'} | {s['max_s'] if s['max_s'] is not None else '–'} "
              f"| {s['console_errors']} | {s['page_errors']} | {(s['died'] or 'no').splitlines()[0]} |")
    m = result["memory"]
    print(f"\nserver memory (RSS with children, MiB; {m['n_samples']} samples every {m['sample_s']} s): "
          f"start {_mib(m['server_start_mib'])}, soak start {_mib(m['soak_start_mib'])}, "
          f"peak {_mib(m['peak_mib'])} (during the soak {_mib(m['soak_peak_mib'])}), end {_mib(m['soak_end_mib'])}, "
          f"browsers closed {_mib(m['after_close_mib'])}")
    t = result["totals"]
    print(f"soak {result['soak_s']} s (browsers closed {result.get('browsers_closed_s')} s later) over "
          f"{len(result['sessions'])} sessions: {t['actions']} inputs drawn, "
          f"{t['timeouts']} timeouts, {t['unfinished']} unfinished, {t['failed_inputs']} failed, "
          f"{t['console_errors']} console errors, {t['page_errors']} page errors, {t['died']} sessions died; "
          f"server tracebacks {result['server_tracebacks']}"
          + ("" if result["server_exit"] is None else f"; server exited with {result['server_exit']}"))
    for s in result["sessions"]:
        for kind in ("console_error_samples", "page_error_samples", "failed_input_samples"):
            for msg in s[kind]:
                print(f"  session {s['session']} {kind.replace('_samples', '')}: {msg[:200]}")
    for msg in result["server_traceback_samples"]:
        print(f"  server: {msg}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=4, help="concurrent browser sessions")
    ap.add_argument("--seconds", type=float, default=600.0,
                    help="how long the sessions drive the app, from the moment every page has drawn")
    ap.add_argument("--cases", default="fluid_p076_t0450,fluid_p115_t0300",
                    help="bundled case names (file stems) the server offers; the sessions switch between them")
    ap.add_argument("--json", default=None, help="also write the JSON result here")
    ap.add_argument("--sample-s", type=float, default=2.0, help="memory sampling interval (s)")
    ap.add_argument("--action-timeout", type=float, default=120.0, help="seconds for one input to be drawn")
    ap.add_argument("--load-timeout", type=float, default=1200.0, help="seconds for the first page to be drawn")
    ap.add_argument("--width", type=int, default=1500)
    ap.add_argument("--height", type=int, default=1100)
    args = ap.parse_args(argv)

    if shutil.which("chromium") is None:
        raise SystemExit("Debian chromium is not installed (apt-get install chromium)")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if len(cases) < 2:
        raise SystemExit("--cases needs at least two case names (the sessions switch between them)")
    if args.sessions < 1 or args.seconds <= 0 or args.sample_s <= 0:
        raise SystemExit("--sessions, --seconds and --sample-s must be positive")

    signal.signal(signal.SIGTERM, _sigterm)
    tmp = tempfile.TemporaryDirectory(prefix="elfcore-app-soak-")
    files: list = []
    proc = sampler = None
    clock = Clock()
    sessions: list[Session] = []
    result: dict = {"sessions_requested": args.sessions, "seconds": args.seconds, "cases": cases,
                    "action_timeout_s": args.action_timeout,
                    "machine": f"{os.cpu_count()} CPUs, {platform.platform()}"}
    memory: dict = {"sample_s": args.sample_s}
    interrupted = False
    t_soak = t_end = None
    try:
        t0 = time.perf_counter()
        proc, port, stderr_path = serve(cases, Path(tmp.name), lambda f: files.append(f) or f)
        if not wait_port(port, proc, 180):
            for f in files:
                f.flush()
            tail = stderr_path.read_text(errors="replace").splitlines()[-20:]
            raise SystemExit("panel serve did not start; the end of its stderr:\n" + "\n".join(tail))
        result["server_start_s"] = round(time.perf_counter() - t0, 1)
        sampler = Sampler(proc.pid, args.sample_s, t0)
        memory["server_start_mib"] = sampler.sample()
        sampler.start()
        print(f"server up on 127.0.0.1:{port} in {result['server_start_s']} s; "
              f"opening {args.sessions} sessions", flush=True)

        url = f"http://127.0.0.1:{port}/main"
        sessions = [Session(i, url, clock, args) for i in range(args.sessions)]
        for s in sessions:
            s.start()
        try:
            while not all(s.ready.is_set() for s in sessions):
                time.sleep(0.5)
            memory["soak_start_mib"] = sampler.sample()
            clock.deadline = time.time() + args.seconds
            t_soak = time.perf_counter()
            clock.go.set()
            print(f"soak: {sum(s.died is None for s in sessions)} sessions drive the app for {args.seconds:.0f} s",
                  flush=True)
            while any(s.is_alive() for s in sessions):
                if time.time() >= clock.deadline and memory.get("soak_end_mib") is None:
                    memory["soak_end_mib"] = sampler.sample()
                time.sleep(0.5)
        except KeyboardInterrupt:
            interrupted = True
            print("interrupted: stopping the sessions", flush=True)
            clock.stop.set()
            clock.go.set()
            end = time.time() + 20
            try:
                while any(s.is_alive() for s in sessions) and time.time() < end:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
        t_end = max((s.stopped_at for s in sessions if s.stopped_at is not None), default=None)
        result["browsers_closed_s"] = None if t_end is None else round(time.perf_counter() - t_end, 1)
        if memory.get("soak_end_mib") is None:
            memory["soak_end_mib"] = sampler.sample()
        memory["after_close_mib"] = sampler.sample()
    except KeyboardInterrupt:
        interrupted = True
        clock.stop.set()
        clock.go.set()
        print("interrupted", flush=True)
    finally:
        clock.stop.set()
        clock.go.set()
        if sampler is not None:
            sampler.halt.set()
        if proc is not None:
            result["server_exit"] = proc.poll()
            stop_process(proc)
        _stop_descendants()
        for f in files:
            f.close()
        n_tb, tb_samples = tracebacks(Path(tmp.name) / "serve.err")
        tmp.cleanup()

    samples = sampler.samples if sampler is not None else []
    window = (t_soak - t0, t_end - t0) if t_soak is not None and t_end is not None else (float("inf"), 0.0)
    memory.update({
        "peak_mib": max((mib for _, mib in samples), default=None),
        "soak_peak_mib": max((mib for t, mib in samples if window[0] <= t <= window[1]), default=None),
        "n_samples": len(samples),
        "samples": samples,
    })
    for key in ("server_start_mib", "soak_start_mib", "soak_end_mib", "after_close_mib"):
        memory[key] = None if memory.get(key) is None else round(memory[key], 1)
    reports = [s.report() for s in sessions]
    result.update({
        "interrupted": interrupted,
        "soak_s": None if t_soak is None or t_end is None else round(t_end - t_soak, 1),  # until the last stopped
        "memory": memory,
        "sessions": reports,
        "totals": {k: sum(r[k] for r in reports) for k in
                   ("actions", "timeouts", "unfinished", "failed_inputs", "console_errors", "page_errors")}
        | {"died": sum(r["died"] is not None for r in reports)},
        "server_tracebacks": n_tb,
        "server_traceback_samples": tb_samples,
    })
    result.setdefault("server_exit", None)
    print_report(result)
    # the memory samples on one line: the object stays readable in a terminal
    memory["samples"] = "__SAMPLES__"
    text = json.dumps(result, indent=1, ensure_ascii=False).replace('"__SAMPLES__"', json.dumps(samples))
    memory["samples"] = samples
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 1 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
