"""Screening at scale: ELF topology of whole trajectories and structure sets, on Dask, into an ASE database.

``elfcore screen`` (``docs/design.md``). One module per job:

- :mod:`~elfcore.screen.inputs` — file specs (``traj.xyz@0:100:5``, directories,
  globs) → frames, each with the reason it cannot be screened, if any;
- :mod:`~elfcore.screen.task` — the per-frame task (prediction + topology) a worker runs;
- :mod:`~elfcore.screen.database` — the results database (ase.db), resume, CSV,
  reading it back as records or an :class:`xarray.Dataset`;
- :mod:`~elfcore.screen.engine` — the run on Dask distributed;
- :mod:`~elfcore.screen.plot` — φ and thresholds against frame, time or pressure.

Examples
--------
>>> from elfcore.screen import parse_input
>>> parse_input("md.xyz@::10")
('md.xyz', slice(None, None, 10))
"""
from __future__ import annotations

from .database import connect, export_csv, read_frames, read_records, results_dataset
from .engine import choose_for_frames, screen, start_client
from .inputs import Frame, check_frame, expand_inputs, parse_input
from .plot import plot_results, x_axis
from .task import ScreenSettings, screen_frame

__all__ = [
    "screen",
    "choose_for_frames",
    "ScreenSettings",
    "screen_frame",
    "expand_inputs",
    "parse_input",
    "check_frame",
    "Frame",
    "connect",
    "read_records",
    "results_dataset",
    "read_frames",
    "export_csv",
    "plot_results",
    "x_axis",
    "start_client",
]
