"""The Docker-mode runtime: ModelInstances as containers on this host, through the Docker SDK.

State lives in Docker. Every call lists the xw containers and derives instances, held devices and
reserved ports from their labels, so a restarted CLI or Docker daemon loses nothing and a container
removed by hand simply disappears. ``xw ps`` shows this state directory's instances (its server name);
held devices and ports are counted over *every* xw container of the engine whatever its server name, so
users with different ``XW_STATE_DIR`` never share a chip (devices are told apart by the sysfs tree they
were found in, label ``xw.sysfs_root``). The lock serialising allocation is host-wide, one per engine
(:func:`.state.engine_lock_path`). The state directory holds only the server name and "stopped on
purpose" markers.

Restart after a Docker daemon crash: containers run with restart policy ``always``, which dockerd
honours when it comes back after SIGTERM *and* SIGKILL (``unless-stopped`` is not honoured after a
SIGKILL: the daemon's restore kills the orphaned container and records that as a manual stop). ``xw stop``
switches the policy to ``no`` before stopping, so a stopped instance stays stopped across daemon
restarts, and ``xw start`` switches it back.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import docker.errors
from docker.models.containers import Container

import docker
from xw_operator.devices import DevicesConfig
from xw_operator.errors import XwError
from xw_operator.instance import ModelInstance
from xw_operator.multinode import refuse_multi_node_on_docker
from xw_operator.plan import Profile, resolve
from xw_operator.render_docker import (
    LABEL_ALIAS,
    LABEL_CHIP,
    LABEL_DEVICE_INDICES,
    LABEL_HEALTH_PATH,
    LABEL_HOST_PORT,
    LABEL_INSTANCE_ID,
    LABEL_MODEL_ID,
    LABEL_READY_PATH,
    LABEL_RUNTIME,
    LABEL_SERVER_NAME,
    LOOPBACK,
    container_name,
    docker_model_volume,
    render_docker,
)
from xw_operator.settings import settings

from . import state
from .allocation import (
    Holding,
    choose_indices,
    choose_port,
    find_group,
    holding_from_labels,
    parse_indices,
    used_indices,
)
from .errors import NotFound, RuntimeFailure
from .progress import PullProgress, WaitView, plain_pull, rich_pull
from .status import CREATED, EXITED, READY, STOPPED, Status, classify, probe
from .sysfs import ChipGroup, discover
from .sysfs import sysfs_root as sysfs_root_default
from .xwcli import is_xw_cli_container, is_xw_container, published_port, runtime_engine, xw_cli_server_name

OWNER_XW, OWNER_XW_CLI = "xw", "xw-cli"

LABEL_SYSFS_ROOT = "xw.sysfs_root"  # ours: the sysfs tree the devices were found in (told apart per host)
RESTART_POLICY = "always"
DEFAULT_SYSFS_ROOT = "/sys"  # what a container without the xw.sysfs_root label was allocated from

Printer = Callable[[str], None]

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def host_arch() -> str:
    machine = platform.machine().lower()
    return _ARCH.get(machine, machine)


def port_is_bindable(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on host:port (also catches non-Docker processes and running containers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class InstanceInfo:
    """An instance as Docker reports it (read from one container's labels and state)."""

    name: str
    container_name: str
    container_id: str
    chip: str
    device_indices: tuple[int, ...]
    host_port: int | None
    served_name: str
    image: str
    docker_state: dict[str, Any]
    restart_count: int
    created: str
    owner: str = OWNER_XW  # xw-cli for containers the older tool made (listed, never touched unasked)
    engine: str = ""
    health_path: str = "/health"
    ready_path: str | None = "/v1/models"  # None: the health path alone says ready
    restart_policy: str = ""

    @property
    def endpoint(self) -> str | None:
        return f"http://{LOOPBACK}:{self.host_port}/v1" if self.host_port else None


def _info(container: Container, owner: str = OWNER_XW) -> InstanceInfo:
    attrs = container.attrs
    labels = attrs.get("Config", {}).get("Labels") or {}
    port = labels.get(LABEL_HOST_PORT, "")
    ready = labels.get(LABEL_READY_PATH, "/v1/models")
    return InstanceInfo(
        name=labels.get(LABEL_INSTANCE_ID, container.name),
        container_name=container.name,
        container_id=container.id,
        chip=labels.get(LABEL_CHIP, ""),
        device_indices=parse_indices(labels.get(LABEL_DEVICE_INDICES)),
        host_port=int(port) if port.isdigit() else published_port(attrs),
        # xw-cli serves the alias (its MODEL_NAME) when one is set, else the model id.
        served_name=labels.get(LABEL_ALIAS) or labels.get(LABEL_MODEL_ID, "")
        if owner == OWNER_XW_CLI
        else labels.get(LABEL_MODEL_ID, ""),
        image=attrs.get("Config", {}).get("Image", ""),
        docker_state=attrs.get("State", {}),
        restart_count=int(attrs.get("RestartCount") or 0),
        created=attrs.get("Created", ""),
        owner=owner,
        engine=runtime_engine(labels.get(LABEL_RUNTIME)) or "",
        health_path=labels.get(LABEL_HEALTH_PATH, "/health"),
        ready_path=ready or None,
        restart_policy=str((attrs.get("HostConfig") or {}).get("RestartPolicy", {}).get("Name") or ""),
    )


def _docker_reason(exc: Exception) -> str:
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    return str(exc)


class DockerRuntime:
    def __init__(
        self,
        config: DevicesConfig,
        *,
        client: docker.DockerClient | None = None,
        state_dir: Path | None = None,
        sysfs_root: Path | None = None,
        port_range: tuple[int, int] | None = None,
        arch: str | None = None,
        out: Printer = print,
        progress_stream: IO[str] | None = None,
    ) -> None:
        self.config = config
        try:
            self.client = client or docker.from_env()
            self.client.ping()
        except docker.errors.DockerException as exc:
            raise RuntimeFailure(
                "connecting to Docker",
                f"{exc} (is the engine running? `bash hack/docker.sh up` starts one)",
            ) from None
        try:
            engine_id = str(self.client.info().get("ID") or "default")
        except docker.errors.DockerException as exc:
            raise RuntimeFailure("connecting to Docker", f"docker info: {_docker_reason(exc)}") from None
        self.lock_path = state.engine_lock_path(engine_id)
        self.state_dir = state_dir or state.state_dir()
        self.server_name = state.server_name(self.state_dir)
        self.sysfs_root = sysfs_root
        # Containers of other state directories hold devices when found in the same sysfs tree (a label
        # missing, as on seed or older containers, means the real one).
        self.device_root = str((sysfs_root or sysfs_root_default()).resolve())
        self.port_range = port_range or settings().port_range
        self.arch = arch or host_arch()
        self.out = out
        # Where pull bars and the readiness line are drawn; live views only when it and stdout are terminals.
        self.progress_stream = progress_stream
        # xw-cli shares ~/.xw with us: its server name is in data/server.conf when it ever ran here.
        self.xw_cli_server = xw_cli_server_name(self.state_dir)

    # ------------------------------------------------------------------------------------------ queries

    def _all_containers(self) -> list[Container]:
        """Every container xw or xw-cli made on this Docker engine, whatever its server name or state."""
        found: list[Container] = self.client.containers.list(
            all=True, filters={"label": [LABEL_INSTANCE_ID]}, ignore_removed=True
        )
        return [c for c in found if is_xw_container(c.labels)]

    def _is_xw_cli(self, container: Container) -> bool:
        return is_xw_cli_container(container.labels, self.xw_cli_server)

    def _containers(self, server_name: str | None = None) -> list[Container]:
        """Our containers (``server_name`` given: this host's only); xw-cli's are never among them."""
        return [
            c
            for c in self._all_containers()
            if not self._is_xw_cli(c) and (server_name is None or c.labels.get(LABEL_SERVER_NAME) == server_name)
        ]

    def list_instances(self, *, include_xw_cli: bool = False) -> list[InstanceInfo]:
        """This host's instances; with ``include_xw_cli``, xw-cli's containers too (marked owner=xw-cli)."""
        infos = [_info(c) for c in self._containers(self.server_name)]
        state.prune_stopped(self.state_dir, {i.container_id for i in infos})
        if include_xw_cli:
            infos += [_info(c, OWNER_XW_CLI) for c in self._all_containers() if self._is_xw_cli(c)]
        return sorted(infos, key=lambda i: (i.owner, i.name))

    def _container(self, name: str) -> Container:
        """Our instance NAME, else an xw-cli container the user named (instance id, alias or container name)."""
        try:
            container: Container = self.client.containers.get(container_name(name, self.server_name))
            return container
        except docker.errors.NotFound:
            pass
        for candidate in self._all_containers():
            labels = candidate.labels
            if self._is_xw_cli(candidate) and name in (
                labels.get(LABEL_INSTANCE_ID),
                labels.get(LABEL_ALIAS),
                candidate.name,
            ):
                return candidate
        raise NotFound(name, self.server_name) from None

    def _owner(self, container: Container) -> str:
        return OWNER_XW_CLI if self._is_xw_cli(container) else OWNER_XW

    def get(self, name: str) -> InstanceInfo:
        container = self._container(name)
        return _info(container, self._owner(container))

    def status(self, info: InstanceInfo, *, probe_timeout: float = 2.0) -> Status:
        running = info.docker_state.get("Status") == "running"
        result = (
            probe(LOOPBACK, info.host_port, probe_timeout, health_path=info.health_path, ready_path=info.ready_path)
            if running and info.host_port
            else None
        )
        last = self._last_exit_code(info) if running and info.restart_count else None
        return classify(
            info.docker_state,
            # "no" is set only by `xw stop` (see the module doc), so it reads the same for every user.
            stopped_on_purpose=info.restart_policy == "no" or info.container_id in state.stopped_ids(self.state_dir),
            probe=result,
            served_name=info.served_name,
            restart_count=info.restart_count,
            last_exit_code=last,
        )

    def _last_exit_code(self, info: InstanceInfo) -> int | None:
        """The exit code of the container's latest ``die`` event (Docker resets State.ExitCode on restart)."""
        try:
            events = self.client.api.events(
                since=_created_epoch(info.created),
                until=int(time.time()) + 1,
                filters={"container": info.container_id, "event": "die"},
                decode=True,
            )
            code = None
            for event in events:
                value = event.get("Actor", {}).get("Attributes", {}).get("exitCode")
                if value is not None and str(value).lstrip("-").isdigit():
                    code = int(value)
            return code
        except docker.errors.DockerException:
            return None

    def holdings(self, *, every_server: bool = False) -> list[Holding]:
        """What this host's containers and xw-cli's hold, in any state (a stopped xw-cli instance comes
        back on the same devices and port). ``every_server``: also containers of other server names (ports
        are host-wide). Devices: every xw container found in the same sysfs tree, whatever its server name, so
        two state directories on one host never share a chip (tests simulate hosts with their own sysfs)."""
        out = []
        for c in self._all_containers():
            xw_cli = self._is_xw_cli(c)
            same_host = (c.labels.get(LABEL_SYSFS_ROOT) or DEFAULT_SYSFS_ROOT) == self.device_root
            if not (every_server or xw_cli or same_host):
                continue
            holding = holding_from_labels(c.labels, self.config)
            if holding.host_port is None:
                holding = Holding(holding.instance, holding.chip, holding.indices, published_port(c.attrs))
            if xw_cli:
                holding = Holding(f"{holding.instance} (xw-cli)", holding.chip, holding.indices, holding.host_port)
            out.append(holding)
        return out

    def devices(self) -> tuple[list[ChipGroup], list[Holding]]:
        return discover(self.config, self.sysfs_root), self.holdings()

    # ----------------------------------------------------------------------------------------- actions

    def ensure_image(self, image: str) -> None:
        """A local image is used as is; otherwise it is pulled, with progress on ``out``."""
        try:
            self.client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise RuntimeFailure("image lookup", f"{image}: {_docker_reason(exc)}") from None
        repo, tag = _split_image(image)
        progress = PullProgress(image)
        try:
            events = self.client.api.pull(repo, tag=tag, stream=True, decode=True)
            stream = self.progress_stream
            if stream is not None and stream.isatty() and sys.stdout.isatty():
                rich_pull(progress, events, stream)
            else:
                plain_pull(progress, events, self.out)
        except docker.errors.DockerException as exc:
            raise RuntimeFailure(
                "image pull",
                f"{image} is not present locally and could not be pulled: {_docker_reason(exc)}",
            ) from None
        if progress.error:
            raise RuntimeFailure("image pull", f"{image}: {progress.error}")

    def prepare(self, instance: ModelInstance) -> Profile:
        """Checks that need no lock: the instance resolves for this host and its model source works here."""
        refuse_multi_node_on_docker(instance.spec.devices.nodes, f"ModelInstance {instance.name}")
        try:  # a catalog instance is completed from its recipe inside resolve (count, engine, source)
            profile = resolve(instance, self.config, arch=self.arch, backend="docker")
        except XwError as exc:
            raise type(exc)(f"ModelInstance {instance.name}: {exc}", reason=exc.reason) from None
        docker_model_volume(profile)  # refuses a pvc source
        host_path = profile.model.host_path
        if host_path is not None and not Path(host_path).is_dir():
            raise XwError(
                f"ModelInstance {instance.name}: spec.model.source.hostPath {host_path} is not a directory on this host"
            )
        return profile

    def create(self, instance: ModelInstance) -> InstanceInfo:
        """Resolve once, pull if needed, then under the host lock: allocate devices and a port, bind the
        profile to them, render and create the container.

        The container carries its devices and port in labels from the moment it exists, so the lock can
        be released right after creation. Any failure removes what was made.
        """
        profile = self.prepare(instance)
        self.ensure_image(profile.image)
        name = container_name(instance.name, self.server_name)
        with state.host_lock(self.lock_path):
            try:
                existing: Container = self.client.containers.get(name)
                raise RuntimeFailure(
                    "create",
                    f"instance {instance.name} already exists (container {name}, {existing.status}); "
                    f"`xw rm {instance.name}` first",
                )
            except docker.errors.NotFound:
                pass
            indices, host_port = self._allocate(profile)
            work = self._work_dir(instance.name) if profile.work_dir else None
            params = _sdk_params(
                render_docker(
                    profile.bind(indices), server_name=self.server_name, host_port=host_port, work_host_dir=work
                )
            )
            params["labels"][LABEL_SYSFS_ROOT] = self.device_root
            try:
                container: Container = self.client.containers.create(**params)
            except docker.errors.DockerException as exc:
                self._remove_quietly(name)
                raise RuntimeFailure("create container", f"{name}: {_docker_reason(exc)}") from None
            except BaseException:
                self._remove_quietly(name)
                raise
        container.reload()
        return _info(container)

    def _allocate(self, profile: Profile) -> tuple[tuple[int, ...], int]:
        """Device indices and a host port for the profile; call with the host lock held."""
        holdings = self.holdings()
        group = find_group(discover(self.config, self.sysfs_root), profile.chip, self.config)
        used = used_indices(holdings, group.chip_key)
        indices = choose_indices(group, profile.device_count, used, profile.requested_indices)
        # Ports are host-wide: every xw or xw-cli container on this engine, in any state, reserves one.
        reserved = {h.host_port: h.instance for h in self.holdings(every_server=True) if h.host_port}
        port = choose_port(profile.requested_host_port, reserved, port_is_bindable, self.port_range)
        return indices, port

    def _work_dir(self, name: str) -> str:
        """The host directory backing an engine's writable work copy (created now, removed with the instance)."""
        path = self.state_dir / "work" / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def _remove_quietly(self, name_or_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            try:
                self.client.api.remove_container(name_or_id, force=True)
            except docker.errors.APIError as exc:
                if exc.status_code != 404:
                    self.out(f"warning: could not remove {name_or_id}: {_docker_reason(exc)}")

    def start(self, name: str, *, remove_on_failure: bool = False) -> InstanceInfo:
        container = self._container(name)
        state.clear_stopped(self.state_dir, container.id)
        try:
            if container.attrs.get("HostConfig", {}).get("RestartPolicy", {}).get("Name") != RESTART_POLICY:
                container.update(restart_policy={"Name": RESTART_POLICY})
            container.start()
        except docker.errors.DockerException as exc:
            if remove_on_failure:
                self._remove_quietly(container.id)
            raise RuntimeFailure("start container", f"{container.name}: {_docker_reason(exc)}") from None
        container.reload()
        return _info(container)

    def stop(self, name: str, *, timeout: int = 30) -> InstanceInfo:
        container = self._container(name)
        # Intent first: if the CLI dies mid-stop, the instance still reads as stopped, not exited.
        state.mark_stopped(self.state_dir, container.id)
        try:
            # Docker would start an `always` container again when the daemon restarts.
            container.update(restart_policy={"Name": "no"})
            container.stop(timeout=timeout)
        except docker.errors.DockerException as exc:
            raise RuntimeFailure("stop container", f"{container.name}: {_docker_reason(exc)}") from None
        container.reload()
        return _info(container)

    def remove(self, name: str, *, force: bool = False) -> None:
        container = self._container(name)
        if container.status in ("running", "restarting") and not force:
            raise RuntimeFailure(
                "remove", f"instance {name} is {container.status}; `xw stop {name}` first or use --force"
            )
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            raise RuntimeFailure("remove container", f"{container.name}: {_docker_reason(exc)}") from None
        state.clear_stopped(self.state_dir, container.id)
        if not self._is_xw_cli(container):
            shutil.rmtree(self.state_dir / "work" / name, ignore_errors=True)

    def logs(self, name: str, *, tail: int | None = None, follow: bool = False) -> Iterator[bytes]:
        container = self._container(name)
        kwargs: dict[str, Any] = {"stdout": True, "stderr": True, "tail": tail if tail is not None else "all"}
        if follow:
            stream: Iterator[bytes] = container.logs(stream=True, follow=True, **kwargs)
            yield from stream
        else:
            yield container.logs(**kwargs)

    def wait_ready(self, name: str, *, timeout: float, interval: float = 0.5) -> Status:
        """Poll until ready; fail early when the engine exits (or Docker restarts it), else at the deadline.

        While waiting, the elapsed time, the state and the engine's last log line are shown (redrawn in
        place on a terminal, a line per change or every 10 s otherwise); a failure carries the last log
        lines and the exact reason.
        """
        deadline = time.monotonic() + timeout
        stream = self.progress_stream
        tty = stream is not None and stream.isatty() and sys.stdout.isatty()

        def draw(text: str) -> None:
            assert stream is not None
            stream.write(text)
            stream.flush()

        view = WaitView(name, draw if tty else self.out, tty)
        try:
            while True:
                info = self.get(name)
                current = self.status(info, probe_timeout=min(2.0, max(0.2, deadline - time.monotonic())))
                if current.state == READY:
                    return current
                view.update(str(current), self._last_line(name))
                if current.state in (EXITED, STOPPED, CREATED) or info.restart_count > 0:
                    code = current.exit_code if current.exit_code is not None else self._last_exit_code(info)
                    raise RuntimeFailure(
                        "waiting for readiness",
                        f"{name}: the engine exited"
                        + (f" with code {code}" if code is not None else "")
                        + f" ({current}); last log lines:\n{self._tail(name)}",
                    )
                if time.monotonic() >= deadline:
                    raise RuntimeFailure(
                        "waiting for readiness",
                        f"{name} not ready within {timeout:g}s: {current}; last log lines:\n{self._tail(name)}",
                    )
                time.sleep(interval)
        finally:
            view.finish()

    def _last_line(self, name: str) -> str:
        lines = self._tail(name, 3).splitlines()
        return lines[-1].strip() if lines and lines[-1] != "(no logs)" else ""

    def _tail(self, name: str, lines: int = 20) -> str:
        try:
            return b"".join(self.logs(name, tail=lines)).decode(errors="replace").rstrip()
        except RuntimeFailure:
            return "(no logs)"

    def run(
        self, instance: ModelInstance, *, wait: bool = True, timeout: float = 600
    ) -> tuple[InstanceInfo, Status | None]:
        """create + start (+ wait): a failed start removes the container it just made."""
        info = self.create(instance)
        info = self.start(instance.name, remove_on_failure=True)
        if not wait:
            return info, None
        return info, self.wait_ready(instance.name, timeout=timeout)


def _created_epoch(created: str) -> int:
    """Docker's ``Created`` (RFC 3339, nanoseconds) as epoch seconds, for the events ``since`` filter."""
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(created[:19] + "+00:00").timestamp())
    except ValueError:
        return 0


def _split_image(image: str) -> tuple[str, str | None]:
    if "@" in image:
        return image, None
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
        return repo, tag
    return image, "latest"


def _sdk_params(params: dict[str, Any]) -> dict[str, Any]:
    """None entrypoint/command mean "the image's default": the SDK wants those keys absent."""
    out = dict(params)
    for key in ("entrypoint", "command"):
        if out.get(key) is None:
            out.pop(key, None)
    return out
