"""The pull progress model and its views, fed with a synthetic Docker pull event stream (no registry here)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from xw_operator.docker_mode.progress import PullProgress, WaitView, human_bytes, plain_pull, rich_pull

MB = 1_000_000


def downloading(layer: str, current: int, total: int) -> dict[str, Any]:
    return {"status": "Downloading", "id": layer, "progressDetail": {"current": current, "total": total}}


def pull_events() -> list[dict[str, Any]]:
    """What dockerd streams for an image of two new layers (40 MB, 10 MB) and one already present."""
    events: list[dict[str, Any]] = [
        {"status": "Pulling from xw-cli/vllm-ascend", "id": "v1"},
        {"status": "Already exists", "id": "aaa"},
        {"status": "Pulling fs layer", "id": "bbb"},
        {"status": "Pulling fs layer", "id": "ccc"},
        {"status": "Waiting", "id": "ccc"},
    ]
    for i in range(1, 5):
        events.append(
            {"status": "Downloading", "id": "bbb", "progressDetail": {"current": i * 10 * MB, "total": 40 * MB}}
        )
        events.append(
            {"status": "Downloading", "id": "ccc", "progressDetail": {"current": i * 2 * MB, "total": 10 * MB}}
        )
    events += [
        {"status": "Verifying Checksum", "id": "bbb"},
        {"status": "Download complete", "id": "bbb"},
        {"status": "Downloading", "id": "ccc", "progressDetail": {"current": 10 * MB, "total": 10 * MB}},
        {"status": "Download complete", "id": "ccc"},
        {"status": "Extracting", "id": "bbb", "progressDetail": {"current": 5 * MB, "total": 40 * MB}},
        {"status": "Pull complete", "id": "bbb"},
        {"status": "Pull complete", "id": "ccc"},
        {"status": "Digest: sha256:abc"},
        {"status": "Status: Downloaded newer image for xw-cli/vllm-ascend:v1"},
    ]
    return events


def clock(step: float = 1.0) -> Any:
    t = [0.0]

    def now() -> float:
        t[0] += step
        return t[0]

    return now


def test_bytes_rate_and_eta_midway() -> None:
    progress = PullProgress("img")
    events = pull_events()
    for t, event in enumerate(events[:9]):  # through the second Downloading pair (bbb 20 MB, ccc 4 MB)
        progress.feed(event, float(t))
    assert progress.layers["bbb"].downloaded == 20 * MB and progress.layers["ccc"].total == 10 * MB
    assert progress.downloaded == 24 * MB
    assert progress.total == 50 * MB  # the present layer has no size and does not count
    assert progress.rate is not None and progress.rate > 0
    assert progress.eta is not None and progress.eta > 0
    assert "24.0 MB / 50.0 MB" in progress.summary() and "48%" in progress.summary()
    assert "1/3 layers" in progress.summary()


def test_complete_pull() -> None:
    progress = PullProgress("img")
    for t, event in enumerate(pull_events()):
        progress.feed(event, float(t))
    assert progress.complete and progress.downloaded == progress.total == 50 * MB
    assert progress.eta == 0.0 or progress.eta is None
    assert progress.messages[-1].startswith("Status: Downloaded newer image")


def test_error_event_stops_with_the_reason() -> None:
    lines: list[str] = []
    events = [*pull_events()[:6], {"errorDetail": {"message": "manifest unknown"}, "error": "manifest unknown"}]
    progress = plain_pull(PullProgress("img"), events, lines.append, clock=clock())
    assert progress.error == "manifest unknown"
    assert lines[-1] == "  error: manifest unknown"


def test_plain_view_prints_phase_changes_not_every_byte() -> None:
    lines: list[str] = []
    plain_pull(PullProgress("img"), pull_events(), lines.append, clock=clock(0.1), every=1000)
    assert lines[0] == "pulling img"
    assert "  bbb: Downloading" in lines and lines.count("  bbb: Downloading") == 1
    assert lines[-1].startswith("pulled img: 50.0 MB / 50.0 MB, 100%, 3/3 layers")
    assert not any("\x1b" in line for line in lines)  # no terminal control codes in plain output


def test_rich_view_draws_layer_and_overall_bars() -> None:
    out = io.StringIO()

    def events() -> Iterator[dict[str, Any]]:
        yield from pull_events()

    progress = rich_pull(PullProgress("xw-cli/vllm-ascend:v1"), events(), out, clock=clock())
    text = out.getvalue()
    assert progress.complete
    assert "xw-cli/vllm-ascend:v1" in text and "bbb" in text and "50.0 MB" in text


def test_wait_view_shows_elapsed_state_and_last_log_line() -> None:
    lines: list[str] = []
    view = WaitView("q", lines.append, tty=False, started=0.0, every=10)
    view.update("starting: no answer yet", "INFO loading weights 3/8", now=5)
    view.update("starting: no answer yet", "INFO loading weights 3/8", now=7)  # unchanged, too soon
    view.update("starting: no answer yet", "INFO loading weights 3/8", now=16)  # unchanged, but 10 s later
    assert lines == [
        "q: waiting for readiness (5s) starting: no answer yet | INFO loading weights 3/8",
        "q: waiting for readiness (16s) starting: no answer yet | INFO loading weights 3/8",
    ]


def test_human_bytes() -> None:
    assert human_bytes(999) == "999 B" and human_bytes(15_300_000_000) == "15.3 GB"
