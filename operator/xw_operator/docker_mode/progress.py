"""Long waits that look alive: image pulls and the readiness wait of ``xw run``.

:class:`PullProgress` is a pure model of Docker's pull event stream (``{"id": layer, "status":
"Downloading", "progressDetail": {"current": n, "total": m}}`` ...): per-layer and overall bytes, rate and
ETA, computed from the events and the times they arrived (passed in, so tests feed recorded or synthetic
streams). Two views draw it: a ``rich`` progress display when the output is a terminal, plain lines
otherwise (one per layer phase change plus an overall line at most every few seconds). The readiness
wait is drawn the same way: elapsed time, the state, and the engine's last log line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

DONE_PHASES = ("Pull complete", "Already exists", "Download complete")
RATE_WINDOW_S = 10.0


@dataclass
class Layer:
    id: str
    status: str = ""
    downloaded: int = 0  # bytes fetched so far (kept after extraction starts)
    total: int | None = None
    done: bool = False


@dataclass
class PullProgress:
    """Layers and byte counts of one pull; ``feed`` each decoded event with the time it arrived."""

    image: str
    layers: dict[str, Layer] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)  # non-layer statuses ("Digest: ...", "Status: ...")
    error: str | None = None
    started: float | None = None
    _samples: list[tuple[float, int]] = field(default_factory=list)

    def feed(self, event: Mapping[str, Any], now: float) -> str | None:
        """Apply one event; returns a phase-change line for plain output (None when only bytes moved)."""
        if self.started is None:
            self.started = now
        if "error" in event or "errorDetail" in event:
            detail = event.get("errorDetail") or {}
            self.error = str(event.get("error") or detail.get("message") or "pull failed")
            return f"error: {self.error}"
        status = str(event.get("status") or "")
        layer_id = str(event.get("id") or "")
        if not layer_id or status.startswith(("Pulling from", "Digest:", "Status:")):
            if status:
                self.messages.append(status if not layer_id else f"{layer_id}: {status}")
            return status or None
        layer = self.layers.setdefault(layer_id, Layer(layer_id))
        changed = status != layer.status
        layer.status = status
        detail = event.get("progressDetail") or {}
        if status == "Downloading":
            current, total = detail.get("current"), detail.get("total")
            if isinstance(total, int) and total > 0:
                layer.total = total
            if isinstance(current, int):
                layer.downloaded = max(layer.downloaded, current)
        elif status in ("Download complete", "Verifying Checksum") and layer.total:
            layer.downloaded = layer.total
        if status in DONE_PHASES:
            layer.done = status != "Download complete" or layer.done
            if layer.total:
                layer.downloaded = layer.total
        if status in ("Pull complete", "Already exists"):
            layer.done = True
        self._samples.append((now, self.downloaded))
        cutoff = now - RATE_WINDOW_S
        while len(self._samples) > 2 and self._samples[0][0] < cutoff:
            self._samples.pop(0)
        return f"{layer_id}: {status}" if changed else None

    @property
    def downloaded(self) -> int:
        return sum(layer.downloaded for layer in self.layers.values())

    @property
    def total(self) -> int | None:
        """Sum of known layer sizes; None until every unfinished layer has announced its size."""
        sizes = [layer.total for layer in self.layers.values() if not (layer.done and layer.total is None)]
        if not sizes or any(s is None for s in sizes):
            return None
        return sum(s for s in sizes if s is not None)

    @property
    def rate(self) -> float | None:
        """Bytes per second over the last few seconds of samples."""
        if len(self._samples) < 2:
            return None
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else None

    @property
    def eta(self) -> float | None:
        total, rate = self.total, self.rate
        if total is None or not rate or rate <= 0:
            return None
        return max(0.0, (total - self.downloaded) / rate)

    @property
    def complete(self) -> bool:
        return bool(self.layers) and all(layer.done for layer in self.layers.values())

    def summary(self) -> str:
        total = self.total
        parts = [f"{human_bytes(self.downloaded)}" + (f" / {human_bytes(total)}" if total else "")]
        if total:
            parts.append(f"{100 * self.downloaded / total:.0f}%")
        done = sum(1 for layer in self.layers.values() if layer.done)
        parts.append(f"{done}/{len(self.layers)} layers")
        if self.rate:
            parts.append(f"{human_bytes(int(self.rate))}/s")
        if self.eta is not None:
            parts.append(f"ETA {human_duration(self.eta)}")
        return ", ".join(parts)


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def human_duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


# ------------------------------------------------------------------------------------------- views


def plain_pull(
    progress: PullProgress,
    events: Iterable[Mapping[str, Any]],
    write: Callable[[str], None],
    *,
    clock: Callable[[], float] = time.monotonic,
    every: float = 5.0,
) -> PullProgress:
    """Plain lines: each layer phase change, and an overall line at most every ``every`` seconds."""
    write(f"pulling {progress.image}")
    last = None
    for event in events:
        now = clock()
        line = progress.feed(event, now)
        if line:
            write(f"  {line}")
        if progress.error:
            break
        if last is None or now - last >= every:
            if progress.layers:
                write(f"  {progress.summary()}")
            last = now
    if not progress.error:
        write(f"pulled {progress.image}: {progress.summary()}")
    return progress


def rich_pull(
    progress: PullProgress,
    events: Iterable[Mapping[str, Any]],
    stream: IO[str],
    *,
    clock: Callable[[], float] = time.monotonic,
) -> PullProgress:
    """A live ``rich`` display: one bar per layer plus an overall bar with bytes, rate and ETA."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(file=stream)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        overall = bar.add_task(f"[bold]{progress.image}", total=None)
        tasks: dict[str, TaskID] = {}
        for event in events:
            progress.feed(event, clock())
            if progress.error:
                break
            for layer in progress.layers.values():
                if layer.id not in tasks:
                    tasks[layer.id] = bar.add_task(layer.id, total=layer.total)
                bar.update(
                    tasks[layer.id],
                    completed=layer.downloaded,
                    total=layer.total,
                    description=f"{layer.id} {layer.status[:18]:<18}",
                )
            bar.update(overall, completed=progress.downloaded, total=progress.total)
    if progress.error:
        console.print(f"[red]error[/]: {progress.error}")
    return progress


@dataclass
class WaitView:
    """The readiness wait: elapsed time, state and the engine's last log line, redrawn in place on a TTY."""

    name: str
    write: Callable[[str], None]
    tty: bool
    started: float = field(default_factory=time.monotonic)
    every: float = 10.0
    _last_plain: float | None = None
    _last_text: str = ""

    def update(self, state: str, last_log: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        elapsed = human_duration(now - self.started)
        log = f" | {last_log[:100]}" if last_log else ""
        text = f"{self.name}: waiting for readiness ({elapsed}) {state}{log}"
        if self.tty:
            self.write("\r\x1b[2K" + text[:200])
            return
        core = f"{state}{log}"
        if core != self._last_text or self._last_plain is None or now - self._last_plain >= self.every:
            self.write(text)
            self._last_plain, self._last_text = now, core

    def finish(self) -> None:
        if self.tty:
            self.write("\n")
