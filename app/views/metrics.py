"""Metrics panel: MAE/RMSE/R² before and after the k-correction, φ and molecularity per field."""
from __future__ import annotations

import math

import panel as pn
import param

from app.state import FIELD_DEPS

__all__ = ["metrics_markdown", "metrics_pane", "METRIC_DEPS"]

#: State parameters the metrics pane refreshes on (those of every derived field).
METRIC_DEPS = FIELD_DEPS


def _fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def metrics_markdown(m: dict, *, n_shells: int = 0, correction: str | None = None) -> str:
    """Markdown tables of a :meth:`AppState.metrics` result.

    ``correction`` names the k-basis (:meth:`AppState.correction_label`); by
    default it is ``"<n_shells> shells"``.
    """
    correction = f"{n_shells} shells" if correction is None else correction
    lines = []
    errs = m.get("errors") or {}
    if errs:
        lines += ["| vs DFT | MAE | RMSE | R² |", "|---|---|---|---|"]
        b = errs.get("before", {})
        lines.append(f"| prediction | {_fmt(b.get('mae'))} | {_fmt(b.get('rmse'))} | {_fmt(b.get('r2'))} |")
        a = errs.get("after")
        if a:
            lines.append(
                f"| k-corrected ({correction}) | {_fmt(a.get('mae'))} | {_fmt(a.get('rmse'))} | {_fmt(a.get('r2'))} |"
            )
        elif correction.startswith("predicted"):
            lines.append("| k-corrected | no predicted correction for this model | | |")
        else:
            lines.append("| k-corrected | k-shells / k_max = 0: no correction | | |")
        lines.append("")
        if m.get("correction_warning"):  # the engine's own before/after numbers say the correction hurts
            lines += [f"**⚠ {m['correction_warning']}**", ""]
    topo = m.get("topology") or {}
    if topo:
        lines += ["| field | networking value φ | molecularity |", "|---|---|---|"]
        for kind in ("reference", "prediction", "corrected"):
            if kind in topo:
                t = topo[kind]
                lines.append(f"| {kind} | {_fmt(t.get('phi'), 3)} | {_fmt(t.get('molecularity'), 3)} |")
    if m.get("note"):
        lines += ["", f"*{m['note']}*"]
    return "\n".join(lines) if lines else "*No metrics for this case.*"


def metrics_pane(state, tracker=None) -> pn.pane.Markdown:
    """A Markdown pane that follows the state's model, shell and case choices.

    The numbers (the topology in particular) are computed in a worker thread,
    so the pictures update without waiting for them. Every change of
    :data:`METRIC_DEPS` starts a refresh; when refreshes overlap, only the most
    recently started one writes the pane (an older one that finishes later is
    dropped).

    The pane is updated by an asynchronous *watcher*, not by binding an async
    function as the pane's ``object``: with param 2.4 two overlapping
    evaluations of such a binding leave the pane unbound (the second result is
    written as a plain value and removes the reference), after which it never
    refreshes again (seen after two quick k-shell steps, then a model change).
    """
    import asyncio

    pane = pn.pane.Markdown("*Computing metrics…*", sizing_mode="stretch_width", css_classes=["elf-metrics-table"])
    latest = [0]

    async def refresh(*_events) -> None:
        latest[0] += 1
        mine = latest[0]
        correction = state.correction_label()
        pane.loading = True
        if tracker is not None:
            tracker.work_started()
        loop = asyncio.get_running_loop()
        try:
            m = await loop.run_in_executor(None, state.metrics)
            text = metrics_markdown(m, correction=correction)
        except Exception as exc:  # shown in the page, never a traceback
            text = f"*No metrics: {exc}*"
        if mine == latest[0]:
            pane.object = text
            pane.loading = False
        if tracker is not None:  # after the pane: the numbers are in the page before "working…" ends
            tracker.work_done()

    state.param.watch(refresh, list(METRIC_DEPS))
    param.parameterized.async_executor(refresh)
    return pane
