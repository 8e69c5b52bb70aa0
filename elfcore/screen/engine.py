"""Screening run on Dask distributed: frames → worker tasks → rows streamed into the results database.

``docs/design.md``: many structures run the per-frame pipeline as Dask tasks and
stream one row per frame into an ASE database. The client process expands the
inputs, writes the rows of frames that cannot be screened at once, submits the
others (a bounded number in flight), and writes each result as it arrives, so an
interrupted run loses only the frames in flight; a re-run skips the frames the
database already holds.

With ``model="auto"`` (the default) the model is chosen from the union of the elements
of all screenable frames (the inputs are read up front anyway):
:func:`elfcore.zoo.choose_model` gives the default hydrogen entry for pure hydrogen and
``zoo:hydrides`` for hydrides its species cover. Frames holding an element the chosen
model lacks (no shipped model knows it) are recorded as skipped, with the reason.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Iterable, Sequence

import numpy as np

from ..errors import ElfcoreError, StructureError
from ..zoo import AUTO, ModelChoice, choose_model, known_species
from .database import check_metadata, connect, done_frames, export_csv, write_frame
from .inputs import Frame, check_frame, expand_inputs
from .task import ScreenSettings, model_identity, screen_frame

__all__ = ["screen", "choose_for_frames", "default_workers", "start_client"]

log = logging.getLogger(__name__)


def default_workers(device: str = "auto") -> int:
    """Workers of the default local cluster: one per CUDA device when the run uses CUDA, else one per core."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    return max(1, os.cpu_count() or 1)


def start_client(scheduler=None, *, workers: int | None = None, device: str = "auto"):
    """Connect to a Dask scheduler, or start a local cluster of processes.

    Parameters
    ----------
    scheduler : str, distributed.Client or None
        ``"tcp://host:port"`` of a running scheduler, a client to use as is, or
        None for a :class:`distributed.LocalCluster` of ``workers`` processes with
        one thread each.
    workers : int, optional
        Processes of the local cluster (default :func:`default_workers`); ignored
        with a scheduler.
    device : str
        Device of the run (decides :func:`default_workers`).

    Returns
    -------
    client, owned : distributed.Client, list
        ``owned`` holds what this call started (to close afterwards).
    """
    import dask
    from distributed import Client, LocalCluster

    from ..memory import WORKER_MALLOC_ENV

    if scheduler is not None and not isinstance(scheduler, str):
        return scheduler, []
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise ElfcoreError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        return client, [client]
    n = int(workers) if workers else default_workers(device)
    if n < 1:
        raise ElfcoreError(f"workers={workers}; must be ≥ 1")
    # glibc reads its malloc settings when a process starts: they go in before the spawn
    spawn_env = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_MALLOC_ENV}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn_env}):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )
    client = Client(cluster)
    return client, [client, cluster]


def _run_settings(identity: dict, settings: ScreenSettings) -> dict:
    from .. import __version__

    return {**identity, "settings": settings.to_dict(), "elfcore_version": __version__}


def screen(
    inputs: Iterable[str | os.PathLike],
    db,
    *,
    model=AUTO,
    settings: ScreenSettings | None = None,
    scheduler=None,
    workers: int | None = None,
    save_fields: str | os.PathLike | None = None,
    csv: str | os.PathLike | None = None,
    format: str | None = None,
    cell: Sequence[float] | np.ndarray | None = None,
    progress: bool = True,
    max_in_flight: int | None = None,
    relative_to: str | os.PathLike | None = None,
) -> dict:
    """ELF topology of every frame of the inputs, computed on Dask, one row per frame in an ASE database.

    Parameters
    ----------
    inputs : iterable of str or os.PathLike
        Files, directories, globs, each optionally with ``@start:stop:step``
        (:func:`elfcore.screen.inputs.expand_inputs`).
    db : str, os.PathLike or ase.db database
        Results database (:mod:`elfcore.screen.database`); created when missing,
        resumed when it holds frames of the same run.
    model : str, os.PathLike or torch.nn.Module
        ``"auto"`` (default: chosen from the elements of the frames, see the module
        docstring), a model file, a zoo spec (``"zoo:rcut=3.0,lmax=2"``,
        ``"zoo:crystals"``: a 3-member ensemble, which gives the spread of φ,
        ``"zoo:hydrides"``) or a loaded model.
    settings : ScreenSettings, optional
        Grid spacing, device, precision, topology options.
    scheduler : str or distributed.Client, optional
        ``"tcp://host:port"`` of a running Dask scheduler, or a client; default a
        local cluster (:func:`start_client`).
    workers : int, optional
        Processes of the local cluster.
    save_fields : str or os.PathLike, optional
        Directory for each frame's predicted field (netCDF case); it must be
        reachable by the workers.
    csv : str or os.PathLike, optional
        Also write the whole database as CSV at the end.
    format : str, optional
        ase format of the input files.
    cell : array_like, optional
        Cell (Å) for frames that have none (CP2K/plain xyz).
    progress : bool
        tqdm bar on stderr (frames done, frames/s, ETA).
    max_in_flight : int, optional
        Tasks submitted at a time (default 2 per worker thread).
    relative_to : str or os.PathLike, optional
        Key the rows by input paths relative to this folder (default: absolute paths).

    Returns
    -------
    dict
        ``frames`` (selected by the inputs), ``already_done`` (in the database
        before), ``ok``, ``skipped`` (cannot be screened, with a reason),
        ``failed`` (raised, with a reason), ``seconds``, ``frames_per_s`` (frames
        computed per wall second, start-up excluded), ``startup_s``, ``workers``,
        ``db``, ``model``, ``model_choice`` (``"as given"``, or why ``"auto"`` chose
        it), ``model_sha256``, ``csv``.
    """
    settings = settings or ScreenSettings()
    t_start = time.perf_counter()
    frames = list(expand_inputs(inputs, format=format, cell=cell, species=None, relative_to=relative_to))
    choice = choose_for_frames(frames, model)
    name, loaded = _load_model(model if choice is None else choice.spec)
    reason = "as given" if choice is None else choice.reason
    if choice is not None and choice.automatic:
        log.info("model: %s (%s)", name, reason)
    identity = model_identity(loaded, name)
    frames = _check_species(frames, loaded)
    database = connect(db)
    check_metadata(database, _run_settings(identity, settings))
    done = done_frames(database)
    todo = [f for f in frames if f.key not in done]
    summary = {"frames": len(frames), "already_done": len(frames) - len(todo), "ok": 0, "skipped": 0, "failed": 0}
    bar = _progress_bar(len(todo)) if progress else None
    record = _recorder(database, summary, _common_columns(identity, settings), bar)
    try:
        pending = _record_unreadable(todo, record)
        n_workers, t_compute = _compute(pending, record, loaded, settings, scheduler=scheduler, workers=workers,
                                        save_fields=save_fields, max_in_flight=max_in_flight)
    finally:
        if bar is not None:
            bar.close()
    _finish_summary(summary, identity, t_start, t_compute, n_workers, str(getattr(database, "filename", db)))
    summary["model_choice"] = reason
    if csv is not None:
        export_csv(database, csv)
        summary["csv"] = os.fspath(csv)
    return summary


def _frame_elements(frames: Sequence[Frame]) -> dict[str, int]:
    """Element → number of screenable frames (read, periodic...) that hold it."""
    from ase.data import chemical_symbols

    count: dict[str, int] = {}
    for frame in frames:
        if frame.atoms is not None and frame.reason is None:
            for z in {int(z) for z in frame.atoms.get_atomic_numbers()}:
                sym = chemical_symbols[z]
                count[sym] = count.get(sym, 0) + 1
    return count


def choose_for_frames(frames: Sequence[Frame], model=AUTO) -> ModelChoice | None:
    """The model of a screening run: :func:`elfcore.zoo.choose_model` for the union of the frames' elements.

    Parameters
    ----------
    frames : sequence of Frame
        The run's frames (:func:`~elfcore.screen.inputs.expand_inputs`); those that
        cannot be screened anyway are not counted.
    model : str, os.PathLike or torch.nn.Module
        ``"auto"``, a model file or zoo spec (returned as given), or a loaded model (None).

    Returns
    -------
    ModelChoice or None
        None for a loaded model. With ``"auto"``, elements no shipped model knows do
        not block the run: the model is chosen for the others (a warning names the
        elements and what each model covers), and the frames that hold them are
        skipped with a reason (:func:`screen`).
    """
    if not isinstance(model, (str, os.PathLike)):
        return None
    if not (isinstance(model, str) and model.strip() == AUTO):
        return choose_model((), model)
    count = _frame_elements(frames)
    try:
        return choose_model(count, AUTO)
    except StructureError as exc:
        unknown = _unknown_elements(count)
        if not unknown:
            raise
        log.warning("%s; frames holding %s are skipped", exc, ", ".join(unknown))
        choice = choose_model([sym for sym in count if sym not in unknown], AUTO)
        held = ", ".join(f"{sym} ({count[sym]} frame(s))" for sym in unknown)
        return ModelChoice(choice.spec, f"{choice.reason}; {held}: known to no model, skipped")


def _unknown_elements(count: dict[str, int]) -> list[str]:
    """Elements of ``count`` that no shipped model knows (:func:`elfcore.zoo.known_species`)."""
    known = {sym for species in known_species().values() if species for sym in species}
    return [sym for sym in count if sym not in known]


def _check_species(frames: list[Frame], loaded) -> list[Frame]:
    """The frames, those holding an element outside the model's descriptor with the reason they are skipped."""
    from ase.data import atomic_numbers

    descriptor = getattr(loaded, "descriptor_settings", None)
    symbols = getattr(descriptor, "species", ("H",))
    numbers = tuple(atomic_numbers[sym] for sym in symbols)
    out = []
    for frame in frames:
        if frame.atoms is not None and frame.reason is None:
            reason = check_frame(frame.atoms, numbers)
            if reason is not None:
                frame = dataclasses.replace(frame, reason=reason)
        out.append(frame)
    return out


def _load_model(model) -> tuple[str, object]:
    """(name recorded in the database, loaded model) of a model file, zoo spec or loaded model."""
    from ..zoo import resolve_model

    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        if not name.startswith("zoo:"):
            name = os.path.abspath(name)
        return name, resolve_model(model)
    return type(model).__name__, model


def _common_columns(identity: dict, settings: ScreenSettings) -> dict:
    """Columns every row of the run carries: model, grid spacing, elfcore version."""
    from .. import __version__

    return {"model": identity["model"], "spacing": float(settings.spacing), "elfcore_version": __version__}


def _record_unreadable(todo: list, record) -> list:
    """Record the frames that cannot be screened (unreadable, no cell...) as skipped; return the others."""
    pending = []
    for frame in todo:
        if frame.reason is not None:
            record(frame, {"status": "skipped", "reason": frame.reason})
        else:
            pending.append(frame)
    return pending


def _finish_summary(summary: dict, identity: dict, t_start: float, t_compute: float, n_workers: int,
                    db: str) -> None:
    """Add timings, throughput (frames computed per wall second, start-up excluded) and the run's identity."""
    t_end = time.perf_counter()
    computed = summary["ok"] + summary["failed"]
    summary.update(
        seconds=round(t_end - t_start, 3),
        startup_s=round(t_compute - t_start, 3),
        frames_per_s=round(computed / (t_end - t_compute), 4) if computed and t_end > t_compute else None,
        workers=n_workers,
        db=db,
        model=identity["model"],
        model_sha256=identity["model_sha256"],
        csv=None,
    )


def _progress_bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="frame", desc="screen", dynamic_ncols=True)


def _recorder(database, summary: dict, common: dict, bar):
    """``record(frame, result)``: write the frame's row, count its status, advance the bar."""

    def record(frame, result: dict) -> None:
        base = {"source": frame.source, "frame": int(frame.index), **frame.meta, **common}
        write_frame(database, frame.atoms, {**base, **result})
        summary[result["status"]] += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(ok=summary["ok"], skipped=summary["skipped"], failed=summary["failed"], refresh=False)

    return record


def _compute(pending: list, record, loaded, settings: ScreenSettings, *, scheduler, workers, save_fields,
             max_in_flight) -> tuple[int, float]:
    """Screen the ``pending`` frames on Dask, recording each result; return (workers, start of computing).

    At most ``max_in_flight`` tasks (default 2 per worker thread) are submitted at a
    time; a task that raises (or whose worker dies) is recorded as ``failed``. An
    owned local cluster is closed at the end.
    """
    t_compute = time.perf_counter()
    if not pending:
        return 0, t_compute
    from distributed import as_completed

    futures: dict = {}
    owned = None
    try:
        client, owned = start_client(scheduler, workers=workers, device=settings.device)
        threads = client.nthreads()  # worker address → threads, every worker
        model_future = client.scatter(loaded, broadcast=True)
        window = int(max_in_flight or 2 * max(1, sum(threads.values())))
        save_dir = None if save_fields is None else os.path.abspath(os.fspath(save_fields))
        t_compute = time.perf_counter()
        queue = iter(pending)
        stream = as_completed()

        def submit(frame) -> None:
            fut = client.submit(screen_frame, frame.atoms, model_future, settings, source=frame.source,
                                index=int(frame.index), save_dir=save_dir, pure=False)
            futures[fut.key] = (fut, frame)
            stream.add(fut)

        for frame in queue:
            submit(frame)
            if len(futures) >= window:
                break
        for fut in stream:
            _, frame = futures.pop(fut.key)
            try:
                result = fut.result()
            except Exception as exc:  # a worker died or the task raised: record it, go on
                result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]}
            fut.release()
            record(frame, result)
            nxt = next(queue, None)
            if nxt is not None:
                submit(nxt)
        return len(threads), t_compute
    finally:
        for fut, _ in futures.values():
            fut.cancel()
        for obj in owned or []:
            try:
                obj.close()
            except Exception:  # closing a half-started cluster must not hide the real error
                log.debug("closing %r failed", obj, exc_info=True)
