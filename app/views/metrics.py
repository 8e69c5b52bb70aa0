"""Metrics panel: MAE/RMSE/R² before and after the k-correction, φ and molecularity per field."""
from __future__ import annotations

import math

import panel as pn

__all__ = ["metrics_markdown", "metrics_pane", "METRIC_DEPS"]

METRIC_DEPS = ("case", "r_cut", "l_max", "n_shells", "squeeze")


def _fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def metrics_markdown(m: dict, *, n_shells: int = 0) -> str:
    """Markdown tables of a :meth:`AppState.metrics` result."""
    lines = []
    errs = m.get("errors") or {}
    if errs:
        lines += ["| vs DFT | MAE | RMSE | R² |", "|---|---|---|---|"]
        b = errs.get("before", {})
        lines.append(f"| prediction | {_fmt(b.get('mae'))} | {_fmt(b.get('rmse'))} | {_fmt(b.get('r2'))} |")
        a = errs.get("after")
        if a:
            lines.append(
                f"| k-corrected ({n_shells} shells) | {_fmt(a.get('mae'))} | {_fmt(a.get('rmse'))} | {_fmt(a.get('r2'))} |"
            )
        else:
            lines.append("| k-corrected | k-shells = 0: no correction | | |")
        lines.append("")
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


def metrics_pane(state) -> pn.pane.Markdown:
    """A Markdown pane that follows the state's model, shell and case choices.

    The numbers (the topology in particular) are computed in a worker thread,
    so the pictures update without waiting for them.
    """
    import asyncio

    async def render(*_):
        n_shells = state.n_shells
        loop = asyncio.get_running_loop()
        try:
            m = await loop.run_in_executor(None, state.metrics)
        except Exception as exc:  # shown in the page, never a traceback
            return f"*No metrics: {exc}*"
        return metrics_markdown(m, n_shells=n_shells)

    return pn.pane.Markdown(
        pn.bind(render, *[state.param[p] for p in METRIC_DEPS]), sizing_mode="stretch_width",
        css_classes=["elf-metrics-table"],
    )
