"""elfcore app: ``panel serve app/main.py --address 127.0.0.1 --websocket-max-message-size 134217728``
(or ``python app/main.py``; the message size is :data:`app.pipeline.WEBSOCKET_MAX_MESSAGE_BYTES`, which
uploads up to :data:`app.pipeline.MAX_UPLOAD_BYTES` need).

Every browser session gets its own :class:`~app.state.AppState`, its own
widgets and its own off-screen pyvista plotter (built in :func:`build_app`);
only the cache of computed fields is shared by the sessions of one server.
"""
from __future__ import annotations

import importlib.util
import io
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def _register_own_package() -> None:
    """Make this folder importable as the package ``app`` when this file runs as a script.

    ``panel serve app/main.py`` and ``python app/main.py`` execute this file by path, with
    app/ itself (not the folder above it) on ``sys.path``; the sibling modules are then
    imported through the package this file belongs to, registered here from its location.
    elfcore itself is an installed package (``pip install -e .[app]``).
    """
    here = Path(__file__).resolve().parent
    if __package__ or getattr(sys.modules.get("app"), "__path__", None) == [str(here)]:
        return
    spec = importlib.util.spec_from_file_location("app", here / "__init__.py", submodule_search_locations=[str(here)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["app"] = package
    spec.loader.exec_module(package)


_register_own_package()

import panel as pn  # noqa: E402
import param  # noqa: E402

from app.pipeline import MAX_UPLOAD_BYTES, WEBSOCKET_MAX_MESSAGE_BYTES, example_screening, upload_capacity  # noqa: E402
from app.screening import SCREENING_EXTENSIONS  # noqa: E402
from app.state import FIELD_EXTENSIONS, STRUCTURE_EXTENSIONS, AppState  # noqa: E402
from app.views.browser import DrawTracker  # noqa: E402
from app.views.linescan import LineScanView  # noqa: E402
from app.views.metrics import metrics_pane  # noqa: E402
from app.views.screening import ScreeningView  # noqa: E402
from app.views.slice import SliceView  # noqa: E402
from app.views.teaching import TEACHING_DEPS, teaching_text  # noqa: E402
from app.views.viewer3d import Viewer3D  # noqa: E402

__all__ = ["build_app", "build_session", "controls", "Session", "THROTTLE_S", "link_throttled"]

log = logging.getLogger(__name__)

pn.extension("vtk", loading_indicator=True, notifications=False, sizing_mode="stretch_width")


#: A slider's value reaches the state when the handle is released (``value_throttled``), and at most
#: once per this many seconds: key presses or releases that arrive while the page is still busy
#: are merged into one change (the last value) instead of being drawn one after the other.
THROTTLE_S = 0.3


def _set_released(widget, value) -> None:
    """Set a slider's released value (``value_throttled``) on the server *and* in the browser.

    After the state moved a slider (a button, a tour step), its released value must follow: the browser
    sends a release only when the released value changes, so releasing the handle where it was released
    last would otherwise be lost. Panel never sends ``value_throttled`` to the browser, so the slider's
    Bokeh models are set directly (a discrete slider's are those of its inner integer slider).
    """
    inner = getattr(widget, "_slider", None) if isinstance(widget, pn.widgets.DiscreteSlider) else widget
    with param.edit_constant(widget):
        widget.value_throttled = value
    if inner is None:
        return
    raw = widget.values.index(value) if inner is not widget else value
    with param.edit_constant(inner):
        inner.value_throttled = raw
    for model, _ in list(getattr(inner, "_models", {}).values()):
        if getattr(model, "value_throttled", raw) != raw:  # read-only in Python: set as the browser would
            model.set_from_json("value_throttled", raw)


def link_throttled(widget, state: AppState, name: str, delay_s: float = THROTTLE_S) -> None:
    """Link a slider to ``state.<name>``: released values, at most one per ``delay_s``; state → slider always.

    A released value is applied at once when the last one was applied (and drawn) more than
    ``delay_s`` ago; otherwise it waits, and only the latest of the values that came meanwhile is
    applied ``delay_s`` later. Without a server document (tests), values apply at once.
    """
    pending: dict = {"done": float("-inf")}

    def apply() -> None:
        pending.pop("timer", None)
        if "value" not in pending:
            return
        value = pending.pop("value")
        if getattr(state, name) != value:
            setattr(state, name, value)
        pending["done"] = time.monotonic()

    def on_release(event) -> None:
        if event.new is None:
            return
        pending["value"] = event.new
        if "timer" in pending:
            return
        doc = pn.state.curdoc
        if doc is None or doc.session_context is None or time.monotonic() - pending["done"] >= delay_s:
            apply()
            return
        pending["timer"] = doc.add_timeout_callback(apply, int(delay_s * 1000))

    def from_state(event) -> None:
        if widget.value != event.new:
            widget.value = event.new
        if widget.value_throttled != event.new:
            _set_released(widget, event.new)

    widget.param.watch(on_release, "value_throttled")
    state.param.watch(from_state, name)


def _slider(state: AppState, name: str, label: str, kind=None, **kw):
    """A slider over the state parameter ``name`` linked by :func:`link_throttled`."""
    p = state.param[name]
    value = getattr(state, name)
    if kind is pn.widgets.DiscreteSlider:
        widget = kind(label=label, options=list(p.objects), value=value, **kw)
    else:
        kind = kind or pn.widgets.FloatSlider
        step = p.step if getattr(p, "step", None) else 1
        widget = kind(label=label, start=p.bounds[0], end=p.bounds[1], step=step, value=value, **kw)
    link_throttled(widget, state, name)
    return widget


def controls(state: AppState) -> dict[str, pn.viewable.Viewable]:
    """The session's widgets, each built from its state parameter (names are the test hooks)."""
    w = {
        "case": pn.widgets.Select.from_param(state.param.case, name="Case"),
        "view_field": pn.widgets.RadioButtonGroup.from_param(state.param.view_field, name="ELF shown"),
        "r_cut": _slider(state, "r_cut", "r_cut (Å)", pn.widgets.DiscreteSlider),
        "l_max": _slider(state, "l_max", "l_max", pn.widgets.DiscreteSlider),
        "training": pn.widgets.RadioButtonGroup.from_param(state.param.training, name="Model trained on"),
        "n_shells": _slider(state, "n_shells", "k-shells (0 = no correction)", pn.widgets.IntSlider),
        "k_max": _slider(state, "k_max", "k_max (Å⁻¹, 0 = no correction)"),
        "k_basis": pn.widgets.RadioButtonGroup.from_param(state.param.k_basis, name="k-basis by"),
        "k_source": pn.widgets.RadioButtonGroup.from_param(
            state.param.k_source, name="k-correction from",
            options={"oracle (DFT)": "reference", "predicted": "predicted"},
        ),
        "iso": _slider(state, "iso", "Iso value"),
        "show_residual": pn.widgets.Checkbox.from_param(state.param.show_residual, name="Residual isosurfaces"),
        "residual_iso": _slider(state, "residual_iso", "Residual iso ±"),
        "show_atoms": pn.widgets.Checkbox.from_param(state.param.show_atoms, name="Atoms"),
        "show_cell": pn.widgets.Checkbox.from_param(state.param.show_cell, name="Cell box"),
        "slice_mode": pn.widgets.RadioButtonGroup.from_param(state.param.slice_mode, name="Slice plane"),
        "slice_position": _slider(state, "slice_position", "Slice position"),
        "plane_atom_1": pn.widgets.Select.from_param(state.param.plane_atom_1, name="Plane atom 1", width=80),
        "plane_atom_2": pn.widgets.Select.from_param(state.param.plane_atom_2, name="atom 2", width=80),
        "plane_atom_3": pn.widgets.Select.from_param(state.param.plane_atom_3, name="atom 3", width=80),
        "line_atom_1": pn.widgets.Select.from_param(state.param.line_atom_1, name="Line from atom", width=110),
        "line_atom_2": pn.widgets.Select.from_param(state.param.line_atom_2, name="to atom", width=110),
        "line_source": pn.widgets.RadioButtonGroup.from_param(state.param.line_source, name="Line between"),
        "squeeze": _slider(state, "squeeze", "Squeeze cell × (prediction only)"),
        "teaching": pn.widgets.Toggle.from_param(state.param.teaching, label="Teaching mode", color="primary"),
    }
    w["screen_frame"] = pn.widgets.Player(
        label="Frame", start=0, end=1, value=0, interval=2500, loop_policy="once", show_loop_controls=False,
        width=300, visible=pn.bind(bool, state.param.screening),
    )
    _fit_player(w["screen_frame"], state)
    link_throttled(w["screen_frame"], state, "screen_frame")
    state.param.watch(lambda *_: _fit_player(w["screen_frame"], state), "screening")
    example = example_screening()
    w["example_screening"] = pn.widgets.Button(label="Open the example run", visible=example is not None)
    w["example_screening"].on_click(lambda _event: state.open_screening(example))
    from elfcore.zoo import BASELINE, DEFAULT

    w["use_default"] = pn.widgets.Button(label="most accurate", width=135, margin=(5, 4, 5, 10),
                                         description=f"r_cut {DEFAULT[0]:g} Å, l_max {DEFAULT[1]}: the zoo entry "
                                         "most accurate on independent snapshots")
    w["use_default"].on_click(lambda _event: state.use_entry("default"))
    w["use_baseline"] = pn.widgets.Button(label="paper baseline", width=135, margin=(5, 4, 5, 4),
                                          description=f"r_cut {BASELINE[0]:g} Å, l_max {BASELINE[1]}, trained with "
                                          "the paper's protocol")
    w["use_baseline"].on_click(lambda _event: state.use_entry("baseline"))
    w["next_preset"] = pn.widgets.Button(label="Guided tour ▶", color="primary")
    w["next_preset"].on_click(lambda _event: state.next_preset())
    accept = ",".join(FIELD_EXTENSIONS + STRUCTURE_EXTENSIONS + SCREENING_EXTENSIONS)
    w["upload"] = pn.widgets.FileInput(accept=accept + ",*", multiple=False)
    for k, widget in w.items():
        widget.css_classes = list(widget.css_classes or []) + [f"elf-{k.replace('_', '-')}"]

    def oracle_controls(*_events) -> None:  # the predicted correction has its own basis: the oracle's does not apply
        for k in ("k_basis", "n_shells", "k_max"):
            w[k].disabled = state.k_source == "predicted"

    state.param.watch(oracle_controls, "k_source")
    oracle_controls()
    return w


def _fit_player(player, state: AppState) -> None:
    """The frame player spans the frames of the run just opened."""
    if state.run is not None:
        player.param.update(end=max(1, state.run.n_frames - 1), value=int(state.screen_frame))


def upload_limit_mib() -> int:
    """The upload size the page states (MiB): the app's cap, or less if the websocket limit carries less.

    The server must be started with ``websocket_max_message_size = WEBSOCKET_MAX_MESSAGE_BYTES``
    (``scripts/elfcore.sh serve`` and ``python app/main.py`` do).
    """
    return min(MAX_UPLOAD_BYTES, upload_capacity(WEBSOCKET_MAX_MESSAGE_BYTES)) // 2**20


def _upload_watcher(state: AppState, widget: pn.widgets.FileInput):
    def on_upload(event):
        if event.new is None:
            return
        state.upload(widget.filename or "upload", event.new)

    widget.param.watch(on_upload, "value")


def _downloads(state: AppState, viewer: Viewer3D, sliceview: SliceView) -> list:
    def field_file(kind: str, suffix: str):
        def cb():
            try:
                name, data = state.export_field(kind, suffix)
            except Exception as exc:  # shown in the page, never a traceback
                state.message = f"Export failed: {exc}"
                return io.BytesIO(b"")
            dl.filename = name
            return io.BytesIO(data)

        dl = pn.widgets.FileDownload(
            callback=cb, filename=f"{kind}{suffix}", label=f"{kind} {suffix}", color="light", embed=False
        )
        return dl

    def picture(view: str, render, label: str):
        def cb():
            try:
                data = render()
            except Exception as exc:  # shown in the page, never a traceback
                state.message = f"Export failed: {exc}"
                return io.BytesIO(b"")
            dl.filename = state.png_name(view)
            return io.BytesIO(data)

        dl = pn.widgets.FileDownload(callback=cb, filename=f"{view}.png", label=label, color="light", embed=False)
        return dl

    slice_dl = picture("slice", sliceview.png, "slice PNG")
    iso_dl = picture("3d", viewer.png, "3D PNG")
    fields = [field_file(k, s) for k in ("prediction", "corrected") for s in (".cube", ".nc")]
    return [slice_dl, iso_dl, *fields]


@dataclass
class Session:
    """Everything one browser session owns."""

    state: AppState
    controls: dict
    viewer: Viewer3D
    slice: SliceView
    line: LineScanView
    template: object
    tracker: DrawTracker | None = None
    screening: ScreeningView | None = None


def screening_argument(argv: list[str] | None = None) -> str | None:
    """The database named by ``--screening PATH`` on the command line (``panel serve app/main.py --args
    --screening results.db`` or ``python app/main.py --screening results.db``): every session opens it."""
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--screening" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--screening="):
            return arg.split("=", 1)[1]
    return None


def build_app(state: AppState | None = None):
    """Build the page of one session (a fresh state, widgets and plotter); opens ``--screening`` if given."""
    path = screening_argument() if state is None else None
    if path:
        state = AppState()
        state.open_screening(path)
    return build_session(state).template


def build_session(state: AppState | None = None) -> Session:
    """Build one session: state, widgets, views and the page template."""
    state = state or AppState()
    w = controls(state)
    _upload_watcher(state, w["upload"])
    tracker = DrawTracker(css_classes=["elf-busy-indicator"], width=110)
    # "working…" from the first state change until the browser has drawn the last view: begin() is
    # registered before the views' watchers (runs first), bump() with a higher precedence (runs last)
    watched = [p for p in state.param if p not in ("name", "pipeline")]
    state.param.watch(lambda *_: tracker.begin(), watched)  # registered before the views: runs first
    viewer = Viewer3D(state)
    sliceview = SliceView(state)
    lines = LineScanView(state)
    screening = ScreeningView(state)
    message = pn.pane.Alert(
        state.param.message, alert_type="info", visible=pn.bind(bool, state.param.message), css_classes=["elf-message"]
    )
    warning = pn.bind(lambda *_: state.domain_warning(), state.param.case, state.param.training)
    domain = pn.pane.Alert(  # the model was not trained on this kind of case: say so, and name the better one
        warning, alert_type="warning", visible=pn.bind(bool, warning), css_classes=["elf-domain-warning"],
    )
    teaching = pn.pane.Markdown(
        pn.bind(lambda *_: teaching_text(state), *[state.param[p] for p in TEACHING_DEPS]),
        visible=state.param.teaching,
        css_classes=["elf-teaching-text"],
    )
    residual_ctrl = pn.Column(w["show_residual"], w["residual_iso"])
    sidebar = [
        pn.pane.Markdown("### Case"),
        w["case"],
        pn.pane.Markdown(
            f"Upload a structure (POSCAR, CIF, extxyz → prediction) or an ELF file (ELFCAR, cube, XSF, netCDF → "
            f"prediction + residual), ≤ {upload_limit_mib()} MiB:"
        ),
        w["upload"],
        pn.pane.Markdown(
            "Screening run: upload the database of `elfcore screen` (.db) to step through its frames, "
            "or open the shipped example:",
            margin=(0, 10),
        ),
        w["example_screening"],
        w["screen_frame"],
        pn.pane.Markdown("### Model and correction"),
        pn.pane.Markdown("Trained on the fluid (the zoo; it opens on its most accurate entry, the paper's "
                         "baseline is a click away) or on fluid + atomic crystals (for crystalline / atomic H; "
                         "r_cut 3.0 Å, l_max 2):", margin=(0, 10)),
        w["training"], pn.Row(w["use_default"], w["use_baseline"]), w["r_cut"], w["l_max"],
        pn.pane.Markdown("k-space correction: the oracle is fitted to the DFT reference (it needs the answer); "
                         "'predicted' comes from the structure alone (the long-range model shipped with the "
                         "most accurate and the baseline entries; no reference needed):", margin=(0, 10)),
        w["k_source"],
        pn.pane.Markdown("Oracle basis: by number of shells or by k_max (the slider moved last decides):",
                         margin=(0, 10)),
        w["k_basis"], w["n_shells"], w["k_max"],
        pn.pane.Markdown("### 3D view"),
        w["view_field"], w["iso"], residual_ctrl, pn.Row(w["show_atoms"], w["show_cell"]),
        pn.pane.Markdown("### Slice"),
        w["slice_mode"], w["slice_position"], pn.Row(w["plane_atom_1"], w["plane_atom_2"], w["plane_atom_3"]),
        pn.pane.Markdown("### Line scan"),
        pn.pane.Markdown("Between two atoms, or click two points on a slice:", margin=(0, 10)),
        w["line_source"], pn.Row(w["line_atom_1"], w["line_atom_2"]),
        pn.pane.Markdown("### Teaching"),
        w["squeeze"], pn.Row(w["teaching"], w["next_preset"]),
        pn.pane.Markdown("### Export"),
        pn.FlexBox(*_downloads(state, viewer, sliceview)),
    ]
    main = [
        pn.Column(
            domain,
            message,
            teaching,
            screening,
            pn.Row(
                pn.Column(viewer, sizing_mode="stretch_width", css_classes=["elf-3d"]),
                pn.Column(pn.pane.Markdown("### Metrics"), metrics_pane(state, tracker), width=420, css_classes=["elf-metrics"]),
            ),
        ),
        pn.Column(sliceview, css_classes=["elf-slice"]),
        pn.Column(lines, css_classes=["elf-line"]),
    ]
    state.param.watch(lambda *_: tracker.bump(), watched, precedence=100)
    template = pn.template.FastListTemplate(
        title="elfcore — ELF of dense hydrogen", sidebar=sidebar, main=main, sidebar_width=340,
        accent_base_color="#2a6f97", header_background="#2a6f97", **offline_fonts(),
    )
    template.header.append(tracker)
    return Session(state, w, viewer, sliceview, lines, template, tracker, screening)


def offline_fonts() -> dict:
    """Template settings for a page that needs nothing from the internet (a classroom may be offline).

    Panel's Fast design links the Open Sans web font from Google Fonts; the page uses the
    system's sans-serif fonts instead. Returns the ``font``/``font_url`` keywords of the
    template.
    """
    from panel.theme.fast import Fast

    if Fast._resources.get("font"):
        Fast._resources = {**Fast._resources, "font": {}}
    return {"font": "system-ui, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif", "font_url": ""}


if __name__ == "__main__":
    pn.serve(build_app, address="127.0.0.1", port=5006, show=False, title="elfcore",
             websocket_max_message_size=WEBSOCKET_MAX_MESSAGE_BYTES)
elif __name__.startswith("bokeh_app"):  # run by `panel serve app/main.py`
    build_app().servable(title="elfcore")
