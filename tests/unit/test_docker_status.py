"""Docker mode's status classification and state-directory helpers (pure or local-file only)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from xw_operator.docker_mode import state
from xw_operator.docker_mode.status import Probe, Status, classify, model_ids
from xw_operator.errors import XwError

RUNNING = {"Status": "running", "ExitCode": 0}


def _classify(docker_state: dict[str, object], probe: Probe | None = None, **kw: object) -> Status:
    return classify(docker_state, stopped_on_purpose=bool(kw.pop("stopped", False)), probe=probe,
                    served_name="org/m", **kw)  # type: ignore[arg-type]  # fmt: skip


def test_ready_needs_2xx_health_and_the_served_model_listed() -> None:
    assert _classify(RUNNING, Probe(200, ("org/m",))).state == "ready"
    s = _classify(RUNNING, Probe(200, ("other",)))
    assert s.state == "starting" and "not listed" in s.detail and "other" in s.detail
    assert _classify(RUNNING, Probe(200, None)).state == "starting"


def test_404_or_500_health_is_unhealthy_not_ready() -> None:
    for code in (404, 500):
        s = _classify(RUNNING, Probe(code, ("org/m",)))
        assert s.state == "unhealthy" and f"answered {code}" in s.detail


def test_no_answer_is_starting() -> None:
    s = _classify(RUNNING, Probe(None, None, "connection refused"))
    assert s.state == "starting" and s.detail == "connection refused"


def test_stopped_on_purpose_vs_exited_on_its_own() -> None:
    for code in (0, 137, 143):
        assert _classify({"Status": "exited", "ExitCode": code}, stopped=True) == Status("stopped")
    s = _classify({"Status": "exited", "ExitCode": 3})
    assert (s.state, s.exit_code) == ("exited", 3)
    s = _classify({"Status": "restarting", "ExitCode": 3}, restart_count=2)
    assert (s.state, s.exit_code) == ("exited", 3) and "restart 2" in s.detail
    assert _classify({"Status": "created", "ExitCode": 0}).state == "created"


def test_restarted_engine_says_so_while_starting() -> None:
    s = _classify(RUNNING, Probe(None, None, "refused"), restart_count=3, last_exit_code=3)
    assert s.state == "starting" and "restarted 3 time(s), last exit code 3" in s.detail


def test_model_ids() -> None:
    assert model_ids(b'{"data": [{"id": "a"}, {"id": "b"}]}') == ("a", "b")
    assert model_ids(b"not json") is None
    assert model_ids(b'{"models": []}') is None


def test_server_name_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = state.server_name(tmp_path)
    assert first == state.server_name(tmp_path)
    assert (tmp_path / "server_name").read_text().strip() == first
    assert state.make_server_name("GPU-Node_01.example.com", "abc123") == "gpu-node-01-abc123"


def test_stop_markers_and_pruning(tmp_path: Path) -> None:
    state.mark_stopped(tmp_path, "c1")
    state.mark_stopped(tmp_path, "c2")
    state.prune_stopped(tmp_path, {"c1"})
    assert state.stopped_ids(tmp_path) == {"c1"}
    state.clear_stopped(tmp_path, "c1")
    assert state.stopped_ids(tmp_path) == set()


def test_host_lock_is_exclusive(tmp_path: Path) -> None:
    order: list[str] = []
    lock = tmp_path / "x.lock"
    with state.host_lock(lock):

        def other() -> None:
            with state.host_lock(lock, timeout=5):
                order.append("other")

        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.3)
        order.append("holder")
    t.join(5)
    assert order == ["holder", "other"]


def test_host_lock_times_out_with_a_clear_error(tmp_path: Path) -> None:
    # flock is per open file description, so a second open in this process contends like another CLI.
    lock = tmp_path / "x.lock"
    with (
        state.host_lock(lock),
        pytest.raises(XwError, match="could not take the host lock"),
        state.host_lock(lock, timeout=0.2),
    ):
        pass


def test_engine_lock_is_one_fixed_file_per_engine_whatever_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xw_operator.settings import settings

    monkeypatch.delenv(state.LOCK_DIR_ENV, raising=False)
    for sd in ("a", "b"):
        monkeypatch.setenv("XW_STATE_DIR", str(tmp_path / sd))
        settings.cache_clear()
        assert state.engine_lock_path("FV3T:VFWV:EY7G") == Path("/run/lock/xw-docker-FV3T-VFWV-EY7G.lock")
    assert state.engine_lock_path("other") != state.engine_lock_path("FV3T:VFWV:EY7G")
    monkeypatch.setenv(state.LOCK_DIR_ENV, str(tmp_path))
    settings.cache_clear()
    try:
        assert state.engine_lock_path("../../etc/passwd").parent == tmp_path
    finally:
        monkeypatch.delenv(state.LOCK_DIR_ENV)
        settings.cache_clear()


def test_lock_file_is_readable_by_others_and_never_followed_through_a_symlink(tmp_path: Path) -> None:
    import os

    lock = tmp_path / "l.lock"
    old = os.umask(0o077)
    try:
        with state.host_lock(lock):
            pass
    finally:
        os.umask(old)
    assert lock.stat().st_mode & 0o777 == 0o644
    target = tmp_path / "victim"
    target.write_text("keep")
    link = tmp_path / "link.lock"
    link.symlink_to(target)
    with pytest.raises(XwError, match="cannot open the host lock"), state.host_lock(link):
        pass
    assert target.read_text() == "keep"
