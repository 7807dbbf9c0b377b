"""``xw`` commands of Docker mode (contract names): run, create, start, stop, rm, ps, logs, devices.

Exit codes as everywhere in ``xw``: 2 and one line for bad input (:class:`XwError`), 1 for runtime
failures (:class:`RuntimeFailure`, Docker errors). Progress goes to stderr; results to stdout.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from xw_operator.cli_support import (
    devices_config_option,
    handle_errors,
    load_config,
)
from xw_operator.instance import ModelInstance, load_instances

from .allocation import used_indices
from .status import Status

if TYPE_CHECKING:  # the Docker SDK (requests) is imported only by commands that need it
    from .runtime import DockerRuntime, InstanceInfo


def _runtime(devices_config: str | None) -> DockerRuntime:
    from .runtime import DockerRuntime

    return DockerRuntime(load_config(devices_config), out=lambda line: click.echo(line, err=True))


def _load(filename: str) -> list[ModelInstance]:
    return load_instances(filename)


def _describe(info: InstanceInfo) -> str:
    devices = ",".join(map(str, info.device_indices)) or "-"
    return f"{info.name}: container {info.container_name}, {info.chip} devices {devices}, {info.endpoint}"


filename_option = click.option(
    "-f", "--filename", "filename", required=True, type=click.Path(dir_okay=False), help="ModelInstance YAML."
)


@click.command()
@filename_option
@click.option("--no-wait", is_flag=True, help="Return once the container has started.")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds to wait for readiness.")
@devices_config_option
@handle_errors
def run(filename: str, no_wait: bool, timeout: float, devices_config: str | None) -> None:
    """Create, start and wait until every ModelInstance in FILE is ready (Docker mode)."""
    instances = _load(filename)
    rt = _runtime(devices_config)
    for instance in instances:
        info, status = rt.run(instance, wait=not no_wait, timeout=timeout)
        click.echo(f"{_describe(info)}: {status.state if status else 'started'}")


@click.command()
@filename_option
@devices_config_option
@handle_errors
def create(filename: str, devices_config: str | None) -> None:
    """Create the containers for FILE's ModelInstances without starting them (devices are reserved)."""
    instances = _load(filename)
    rt = _runtime(devices_config)
    for instance in instances:
        click.echo(f"{_describe(rt.create(instance))}: created")


@click.command()
@click.argument("name")
@click.option("--wait/--no-wait", default=False, help="Wait until ready.")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds to wait for readiness.")
@devices_config_option
@handle_errors
def start(name: str, wait: bool, timeout: float, devices_config: str | None) -> None:
    """Start instance NAME."""
    rt = _runtime(devices_config)
    info = rt.start(name)
    status = rt.wait_ready(name, timeout=timeout) if wait else None
    click.echo(f"{_describe(info)}: {status.state if status else 'started'}")


@click.command()
@click.argument("name")
@click.option("--timeout", "-t", type=int, default=30, show_default=True, help="Seconds before SIGKILL.")
@devices_config_option
@handle_errors
def stop(name: str, timeout: int, devices_config: str | None) -> None:
    """Stop instance NAME gracefully (it keeps its devices and port until removed)."""
    _runtime(devices_config).stop(name, timeout=timeout)
    click.echo(f"{name}: stopped")


@click.command()
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove even when running.")
@devices_config_option
@handle_errors
def rm(name: str, force: bool, devices_config: str | None) -> None:
    """Remove instance NAME (its devices and port become free)."""
    _runtime(devices_config).remove(name, force=force)
    click.echo(f"{name}: removed")


def _row(info: InstanceInfo, status: Status) -> dict[str, Any]:
    return {
        "name": info.name,
        "state": status.state,
        "exit_code": status.exit_code,
        "detail": status.detail,
        "chip": info.chip,
        "devices": list(info.device_indices),
        "host_port": info.host_port,
        "endpoint": info.endpoint,
        "model": info.served_name,
        "image": info.image,
        "container": info.container_name,
    }


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    cells = [[h for h, _ in columns]]
    for row in rows:
        cells.append([str(row[k]) if row[k] not in (None, "") else "-" for _, k in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


@click.command()
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@devices_config_option
@handle_errors
def ps(output: str, devices_config: str | None) -> None:
    """List this host's instances with their state (probed now: ready needs /health and /v1/models)."""
    rt = _runtime(devices_config)
    rows = [_row(info, rt.status(info)) for info in rt.list_instances()]
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        row["state"] = row["state"] if row["exit_code"] is None else f"{row['state']} ({row['exit_code']})"
        row["devices"] = ",".join(map(str, row["devices"]))
    click.echo(
        _table(
            rows,
            [
                ("NAME", "name"),
                ("STATE", "state"),
                ("CHIP", "chip"),
                ("DEVICES", "devices"),
                ("ENDPOINT", "endpoint"),
                ("MODEL", "model"),
                ("DETAIL", "detail"),
            ],
        )
    )


@click.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output.")
@click.option("--tail", type=int, default=None, help="Only the last N lines.")
@devices_config_option
@handle_errors
def logs(name: str, follow: bool, tail: int | None, devices_config: str | None) -> None:
    """Print the engine's output (stdout and stderr) of instance NAME."""
    out = sys.stdout.buffer
    for chunk in _runtime(devices_config).logs(name, tail=tail, follow=follow):
        out.write(chunk)
        out.flush()


@click.command()
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@devices_config_option
@handle_errors
def devices(output: str, devices_config: str | None) -> None:
    """Accelerators detected in sysfs ($XW_SYSFS_ROOT), their indices and which instance holds each."""
    rt = _runtime(devices_config)
    groups, holdings = rt.devices()
    rows = []
    for group in groups:
        used = used_indices(holdings, group.chip_key)
        for chip in group.chips:
            rows.append(
                {
                    "chip": group.chip_key,
                    "variant": chip.variant_key,
                    "model_name": group.model_name,
                    "index": chip.index,
                    "pci_address": chip.pci_address,
                    "instance": used.get(chip.index),
                }
            )
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(
        _table(
            rows,
            [
                ("CHIP", "chip"),
                ("VARIANT", "variant"),
                ("INDEX", "index"),
                ("PCI", "pci_address"),
                ("INSTANCE", "instance"),
            ],
        )
    )


COMMANDS = [run, create, start, stop, rm, ps, logs, devices]
