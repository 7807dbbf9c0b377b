"""What every ``xw`` command shares: exit codes, error mapping, the --devices-config option.

Exit codes: 0 success; 2 bad input (:class:`XwError`: one clear line on stderr, nothing on stdout);
1 runtime failure (:class:`RuntimeFailure` or a Docker SDK error).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from xw_operator.devices import DevicesConfig, default_devices_config_path, load_devices_config
from xw_operator.errors import RuntimeFailure, XwError

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BAD_INPUT = 2
EXIT_RUNTIME = 1


def fail(message: str, code: int, details: str = "") -> None:
    click.echo(f"error: {message}", err=True)
    if details:
        click.echo(details, err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Turn the project's errors into exit codes and one readable line."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except XwError as exc:
            fail(" ".join(str(exc).split()), EXIT_BAD_INPUT)
        except RuntimeFailure as exc:
            first, _, rest = str(exc).partition("\n")
            fail(first, EXIT_RUNTIME, rest)
        except Exception as exc:
            if type(exc).__module__.startswith("docker."):  # any Docker SDK error is a runtime failure
                fail(f"docker: {exc}", EXIT_RUNTIME)
            raise

    return wrapper  # type: ignore[return-value]


def devices_config_option(func: F) -> F:
    return click.option(
        "--devices-config",
        "devices_config",
        type=click.Path(dir_okay=False),
        default=None,
        help="devices.yaml to use (default: $XW_DEVICES_CONFIG, else the shipped configs/devices.yaml).",
    )(func)


def load_config(path: str | None) -> DevicesConfig:
    return load_devices_config(default_devices_config_path(path))
