"""Stepping through a screening database in the app: state, φ plot, frame player, uploads."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tests.app.conftest import random_h

#: MD times of the written frames, out of order on purpose (the app sorts along the axis)
TIMES = [20.0, 0.0, 10.0, 40.0, 30.0]


@pytest.fixture
def screening_db(tmp_path):
    """A results database as ``elfcore screen`` writes it: 5 screened frames with MD times, one failed row."""
    from elfcore.screen.database import write_frame

    rng = np.random.default_rng(5)
    path = tmp_path / "run.db"
    for i, t in enumerate(TIMES):
        write_frame(path, random_h(rng, n=6, length=3.5), {
            "source": "/data/md.xyz", "frame": i, "status": "ok", "time_fs": t, "phi": 0.3 + 0.01 * t,
            "phi_std": 0.02, "threshold_1d": 0.5, "threshold_2d": 0.4 + 0.01 * t, "threshold_3d": 0.3 + 0.01 * t,
        })
    write_frame(path, None, {"source": "/data/md.xyz", "frame": 9, "status": "failed", "reason": "boom"})
    return path


def test_open_run_shows_frames_in_time_order(state, screening_db):
    assert state.open_screening(screening_db), state.message
    run = state.run
    assert run.n_frames == 5 and run.x_name == "time" and list(run.x) == sorted(TIMES)
    assert state.screening == "run.db" and state.screen_frame == 0
    assert state.case == run.case_key(0) and "5 frames" in state.message
    fs = state.fields()
    assert fs.prediction is not None and fs.reference is None  # a structure: prediction only
    assert len(fs.atoms) == 6
    assert "φ in the database 0.300 ± 0.020" in state.frame_summary()  # the t = 0 frame


def test_frames_follow_the_player_and_the_plot(state, screening_db):
    state.open_screening(screening_db)
    run = state.run
    first = state.fields().atoms.get_positions()
    state.screen_frame = 3
    assert state.case == run.case_key(3)
    assert not np.allclose(state.fields().atoms.get_positions(), first)
    assert "Frame 4/5" in state.frame_summary() and "time (fs) 30" in state.frame_summary()
    # only the frame shown is in the case list, beside the bundled cases
    assert sum(k.startswith("screen:") for k in state.param.case.objects.values()) == 1
    assert state.pick_frame_at(11.0) == 1 and state.case == run.case_key(1)
    assert state.step_frame(+10) == 4 and state.step_frame(-100) == 0
    bundled = next(k for k in state.param.case.objects.values() if k.startswith("bundled:"))
    state.case = bundled
    assert "another case is shown" in state.frame_summary()
    state.screen_frame = 2
    assert state.case == run.case_key(2)


def test_frame_changes_show_no_other_case_in_between(state, screening_db):
    """Opening a run and stepping its frames set the case straight to the frame (each view draws once)."""
    shown = []
    state.param.watch(lambda ev: shown.append(ev.new), "case")
    state.open_screening(screening_db)
    run = state.run
    state.screen_frame = 3
    state.pick_frame_at(11.0)
    assert shown == [run.case_key(0), run.case_key(3), run.case_key(1)]


def test_case_menu_lists_the_shown_frame_while_the_next_is_set(state, screening_db):
    """During a frame step the case menu keeps listing the frame shown until the next one is set: a page's
    menu whose value it does not list falls back to its first case, which was drawn in between (seen in the
    browser as two 3D updates per step). Afterwards only the new frame is listed."""
    state.open_screening(screening_db)
    run = state.run
    state.screen_frame = 3
    state._frame_key(1)  # the first half of a step to frame 1
    listed = set(state.param.case.objects.values())
    assert state.case == run.case_key(3) and run.case_key(3) in listed and run.case_key(1) in listed
    state.screen_frame = 1
    listed = set(state.param.case.objects.values())
    assert state.case == run.case_key(1) and run.case_key(3) not in listed


def test_run_upload_and_refusals(state, screening_db, tmp_path):
    from elfcore.screen.database import write_frame

    before = state.case
    assert state.upload("junk.db", b"this is not sqlite" * 10) is False
    assert "Could not open 'junk.db'" in state.message and state.case == before and state.run is None
    failed = tmp_path / "failed.db"
    write_frame(failed, None, {"source": "/x", "frame": 0, "status": "failed", "reason": "boom"})
    assert state.upload("failed.db", failed.read_bytes()) is False
    assert "no screened frame" in state.message and state.case == before
    assert state.upload("mine.db", screening_db.read_bytes()), state.message
    assert state.run.n_frames == 5 and state.screening == "mine.db"
    state.screen_frame = 2
    name, data = state.export_field("prediction", ".nc")
    assert name.startswith("mine_frame3_prediction") and len(data) > 1000


def test_phi_plot_and_player_follow_the_run(state, screening_db):
    from bokeh.document import Document

    from app.main import build_session
    from app.views.screening import SCREENING_CURVES

    page = build_session(state)
    page.template.server_doc(Document())
    view = page.screening
    assert view.pane.visible is False and page.controls["screen_frame"].visible is False
    state.open_screening(screening_db)
    assert view.pane.visible and page.controls["screen_frame"].visible
    assert page.controls["screen_frame"].end == 4
    phi = view._sources["φ (3D threshold)"].data
    assert list(phi["x"]) == sorted(TIMES) and phi["elf"] == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7])
    assert len(view._sources["φ ± σ (ensemble)"].data["x"]) == 10 and set(SCREENING_CURVES) <= set(view._sources)
    view._on_tap(SimpleNamespace(x=29.0, y=0.5))  # a click near t = 30 fs
    assert state.screen_frame == 3 and view._span.location == 30.0
    assert view._sources["frame shown"].data["elf"] == [pytest.approx(0.6)]
    assert page.controls["screen_frame"].value == 3  # the player follows the state


def test_screening_argument():
    from app.main import screening_argument

    assert screening_argument(["--screening", "r.db"]) == "r.db"
    assert screening_argument(["--screening=x/y.db"]) == "x/y.db"
    assert screening_argument(["--other"]) is None


def test_example_run_is_shipped_and_opens(state):
    from app.pipeline import example_screening

    path = example_screening()
    if path is None:
        pytest.skip("no example screening database in assets/screening")
    assert state.open_screening(path), state.message
    run = state.run
    assert run.n_frames >= 5 and run.x_name == "pressure" and np.all(np.diff(run.x) >= 0)
    assert all(not str(a.info["source"]).startswith("/") for a in run.frames)  # keys travel with the repository
    assert np.isfinite(run.column("phi")).all() and np.isfinite(run.column("phi_std")).all()
    assert run.model == "zoo:crystals" and state.training == "crystals"  # shown with the run's own model
    assert "(zoo:crystals)" in state.frame_summary() and "with its model zoo:crystals" in state.message
