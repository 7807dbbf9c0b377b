"""``xw`` commands of Docker mode (contract names): run, create, start, stop, rm, ps, logs, devices.

Exit codes as everywhere in ``xw``: 2 and one line for bad input (:class:`XwError`), 1 for runtime
failures (:class:`RuntimeFailure`, Docker errors). Progress goes to stderr; results to stdout.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from xw_operator.cli_support import (
    devices_config_option,
    handle_errors,
    load_config,
)
from xw_operator.errors import XwError
from xw_operator.instance import ModelInstance, load_instances, parse_instance

from .allocation import used_indices
from .status import Status

if TYPE_CHECKING:  # the Docker SDK (requests) is imported only by commands that need it
    from .runtime import DockerRuntime, InstanceInfo


def _runtime(devices_config: str | None) -> DockerRuntime:
    from .runtime import DockerRuntime

    return DockerRuntime(
        load_config(devices_config), out=lambda line: click.echo(line, err=True), progress_stream=sys.stderr
    )


def _instance_name(model_id: str) -> str:
    """A DNS-1035 label from a catalog id (``qwen2.5-7b-instruct`` → ``qwen2-5-7b-instruct``)."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_id.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"m-{name}"
    return name[:63].rstrip("-")


def catalog_instance(
    model: str,
    *,
    chip: str,
    engine: str | None,
    devices: int | None,
    name: str | None,
    port: int | None,
    model_path: str | None,
    image: str | None,
    args: tuple[str, ...] = (),
) -> ModelInstance:
    """The ModelInstance ``xw run MODEL --chip CHIP`` means: a catalog model, the rest from its recipe."""
    spec: dict[str, Any] = {"model": {"catalog": model}, "devices": {"chip": chip}}
    if model_path:
        spec["model"]["source"] = {"hostPath": str(Path(model_path).resolve())}
    if engine:
        spec["engine"] = {"name": engine}
    if image:
        spec.setdefault("engine", {})["image"] = image
    if args:
        spec.setdefault("engine", {})["args"] = list(args)
    if devices is not None:
        spec["devices"]["count"] = devices
    if port is not None:
        spec["port"] = port
    doc = {
        "apiVersion": "xw.dev/v1alpha1",
        "kind": "ModelInstance",
        "metadata": {"name": name or _instance_name(model)},
        "spec": spec,
    }
    return parse_instance(doc, source=f"xw run {model}")


def _open(filename: str, devices_config: str | None) -> tuple[DockerRuntime, list[ModelInstance]]:
    """FILE's instances (checked first: bad input never waits for Docker) and the runtime."""
    instances = load_instances(filename)
    return _runtime(devices_config), instances


def _describe(info: InstanceInfo) -> str:
    devices = ",".join(map(str, info.device_indices)) or "-"
    return f"{info.name}: container {info.container_name}, {info.chip} devices {devices}, {info.endpoint}"


F = TypeVar("F", bound=Callable[..., Any])


def docker_command(*options: Callable[[Any], Any]) -> Callable[[Callable[..., None]], click.Command]:
    """A Docker-mode command: ``options`` in the order given, then --devices-config; the project's
    error handling (exit 2 for bad input, 1 for runtime failures) around it."""

    def decorate(func: Callable[..., None]) -> click.Command:
        wrapped: Any = devices_config_option(handle_errors(func))
        for option in reversed(options):
            wrapped = option(wrapped)
        return click.command()(wrapped)

    return decorate


def wait_options(default: bool) -> Callable[[F], F]:
    """--wait/--no-wait and --timeout, shared by run (waits by default) and start (does not)."""

    def decorate(func: F) -> F:
        func = click.option(
            "--timeout", type=float, default=600, show_default=True, help="Seconds to wait for readiness."
        )(func)
        return click.option(
            "--wait/--no-wait", default=default, show_default=True, help="Wait until the engine is ready."
        )(func)

    return decorate


output_option = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)

filename_option = click.option(
    "-f", "--filename", "filename", required=True, type=click.Path(dir_okay=False), help="ModelInstance YAML."
)


@docker_command(
    click.argument("model", required=False),
    click.option("-f", "--filename", "filename", type=click.Path(dir_okay=False), help="ModelInstance YAML."),
    click.option("--chip", help="MODEL: the chip (config_key or variant_key of devices.yaml)."),
    click.option("--engine", help="MODEL: the engine (default: the first the recipe supports on the chip)."),
    click.option(
        "--devices", "device_count", type=click.IntRange(1, 64), help="MODEL: device count (default: recipe)."
    ),
    click.option("--name", help="MODEL: instance name (default: derived from the model id)."),
    click.option("--port", type=click.IntRange(1, 65535), help="MODEL: host port on 127.0.0.1 (default: a free one)."),
    click.option("--model-path", type=click.Path(file_okay=False), help="MODEL: local weights (default: the hub)."),
    click.option("--image", help="MODEL: override the image."),
    click.option("--arg", "engine_args", multiple=True, help="MODEL: an extra engine argument (repeatable)."),
    wait_options(default=True),
)
def run(
    model: str | None,
    filename: str | None,
    chip: str | None,
    engine: str | None,
    device_count: int | None,
    name: str | None,
    port: int | None,
    model_path: str | None,
    image: str | None,
    engine_args: tuple[str, ...],
    wait: bool,
    timeout: float,
    devices_config: str | None,
) -> None:
    """Create, start and wait until ready (Docker mode): catalog MODEL on --chip, or every ModelInstance in FILE.

    \b
    xw run qwen3-8b --chip ascend-910b [--engine vllm] [--devices 2]
    xw run -f instance.yaml
    """
    if (model is None) == (filename is None):
        raise XwError("give a catalog MODEL (see `xw models`) or -f FILE, not both")
    if model is not None:
        if not chip:
            raise XwError(f"xw run {model}: --chip is required (e.g. --chip ascend-910b; `xw models` lists them)")
        instances = [
            catalog_instance(
                model,
                chip=chip,
                engine=engine,
                devices=device_count,
                name=name,
                port=port,
                model_path=model_path,
                image=image,
                args=engine_args,
            )
        ]
    else:
        given = [o for o, v in (("--chip", chip), ("--engine", engine), ("--devices", device_count)) if v]
        if given:
            raise XwError(f"{', '.join(given)} apply to xw run MODEL; with -f the file says it")
        assert filename is not None
        instances = load_instances(filename)
    rt = _runtime(devices_config)
    for instance in instances:
        info, status = rt.run(instance, wait=wait, timeout=timeout)
        click.echo(f"{_describe(info)}: {status.state if status else 'started'}")


@docker_command(
    filename_option,
)
def create(filename: str, devices_config: str | None) -> None:
    """Create the containers for FILE's ModelInstances without starting them (devices are reserved)."""
    rt, instances = _open(filename, devices_config)
    for instance in instances:
        click.echo(f"{_describe(rt.create(instance))}: created")


@docker_command(
    click.argument("name"),
    wait_options(default=False),
)
def start(name: str, wait: bool, timeout: float, devices_config: str | None) -> None:
    """Start instance NAME."""
    rt = _runtime(devices_config)
    info = rt.start(name)
    status = rt.wait_ready(name, timeout=timeout) if wait else None
    click.echo(f"{_describe(info)}: {status.state if status else 'started'}")


@docker_command(
    click.argument("name"),
    click.option("--timeout", "-t", type=int, default=30, show_default=True, help="Seconds before SIGKILL."),
)
def stop(name: str, timeout: int, devices_config: str | None) -> None:
    """Stop instance NAME gracefully (it keeps its devices and port until removed)."""
    _runtime(devices_config).stop(name, timeout=timeout)
    click.echo(f"{name}: stopped")


@docker_command(
    click.argument("name"),
    click.option("--force", is_flag=True, help="Remove even when running."),
)
def rm(name: str, force: bool, devices_config: str | None) -> None:
    """Remove instance NAME (its devices and port become free)."""
    _runtime(devices_config).remove(name, force=force)
    click.echo(f"{name}: removed")


def _row(info: InstanceInfo, status: Status) -> dict[str, Any]:
    return {
        "name": info.name,
        "owner": info.owner,
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


def _emit(rows: list[dict[str, Any]], output: str, columns: list[tuple[str, str]]) -> None:
    """Rows as a JSON list (every field) or as a table of ``columns`` (header, key)."""
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(_table(rows, columns))


@docker_command(
    output_option,
)
def ps(output: str, devices_config: str | None) -> None:
    """List this host's instances with their state (probed now: ready needs the engine's health and ready
    paths), and the containers xw-cli runs on this host (OWNER xw-cli; xw never changes them unasked)."""
    rt = _runtime(devices_config)
    rows = [_row(info, rt.status(info)) for info in rt.list_instances(include_xw_cli=True)]
    if output == "table":
        for row in rows:
            row["state"] = row["state"] if row["exit_code"] is None else f"{row['state']} ({row['exit_code']})"
            row["devices"] = ",".join(map(str, row["devices"]))
    _emit(rows, output, PS_COLUMNS)


@docker_command(
    click.argument("name"),
    click.option("-f", "--follow", is_flag=True, help="Keep printing new output."),
    click.option("--tail", type=int, default=None, help="Only the last N lines."),
)
def logs(name: str, follow: bool, tail: int | None, devices_config: str | None) -> None:
    """Print the engine's output (stdout and stderr) of instance NAME."""
    out = sys.stdout.buffer
    for chunk in _runtime(devices_config).logs(name, tail=tail, follow=follow):
        out.write(chunk)
        out.flush()


@docker_command(
    output_option,
)
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
    _emit(rows, output, DEVICES_COLUMNS)


@docker_command(
    output_option,
    click.option("--all", "show_all", is_flag=True, help="Also models that run on no chip of this host."),
)
def models(output: str, show_all: bool, devices_config: str | None) -> None:
    """The model catalog (models.yaml beside devices.yaml) and what runs on the chips this host has."""
    from .sysfs import discover

    config = load_config(devices_config)
    recipes = config.recipes
    if recipes.models is None:
        raise XwError("no models.yaml beside the devices config; the catalog is empty")
    host_keys: dict[str, set[str]] = {}
    for group in discover(config):
        host_keys.setdefault(group.chip_key, set()).update(group.variant_keys)
    rows: list[dict[str, Any]] = []
    for model in recipes.models.models:
        here: list[dict[str, Any]] = []
        for chip, variants in host_keys.items():
            engines = model.engines_for([*sorted(variants), chip])
            if engines:
                here.append({"chip": chip, "engines": engines})
        if not here and not show_all:
            continue
        rows.append(
            {
                "model": model.model_id,
                "source": model.source_id,
                "parameters_b": model.parameters,
                "context_length": model.context_length,
                "runs_here": here,
                "supported": {c: [e.split(":", 1)[0] for e in es] for c, es in model.supported_devices.items()},
            }
        )
    if output == "table":
        if not host_keys:
            click.echo("no supported chips detected on this host (`xw devices`); showing the catalog", err=True)
        for row in rows:
            row["here"] = "; ".join(f"{h['chip']}: {', '.join(h['engines'])}" for h in row["runs_here"]) or "-"
            row["chips"] = ", ".join(row["supported"])
    _emit(rows, output, MODELS_COLUMNS)


# Table columns (header, row key) of ps, devices and models; -o json prints every key.
PS_COLUMNS = [
    ("NAME", "name"),
    ("STATE", "state"),
    ("CHIP", "chip"),
    ("DEVICES", "devices"),
    ("OWNER", "owner"),
    ("ENDPOINT", "endpoint"),
    ("MODEL", "model"),
    ("DETAIL", "detail"),
]
DEVICES_COLUMNS = [
    ("CHIP", "chip"),
    ("VARIANT", "variant"),
    ("INDEX", "index"),
    ("PCI", "pci_address"),
    ("INSTANCE", "instance"),
]
MODELS_COLUMNS = [
    ("MODEL", "model"),
    ("PARAMS(B)", "parameters_b"),
    ("RUNS HERE (chip: engines)", "here"),
    ("SUPPORTED CHIPS", "chips"),
    ("SOURCE", "source"),
]

COMMANDS = [run, create, start, stop, rm, ps, logs, devices, models]
