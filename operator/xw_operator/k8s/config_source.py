"""devices.yaml as live configuration: read, validate, keep the last good version, report what changed.

Two sources, one at a time:

- a file (``--devices-config``), typically a mounted ConfigMap: the kubelet swaps the ``..data`` symlink
  when the ConfigMap changes, so the file is re-read and hashed on every poll (it is a few KiB; mtimes
  of symlinked projections are unreliable);
- a ConfigMap reference (``--devices-configmap NS/NAME``): GET by name every poll (least privilege: the
  RBAC rule can name the one ConfigMap), compared by content hash.

An invalid new version never replaces the good one: the store keeps serving the last good config and
records the error, which the operator logs, posts as a Warning Event and exposes on its health endpoint.

Start-up never depends on a human: every accepted version is persisted (last_good.py); an operator that
starts while its devices.yaml is invalid or unreadable runs on the persisted one, and with none it stays
up with no configuration (``ready`` is False: nothing is reconciled; /healthz and an Event say why) until
a valid version appears -- which then counts as a change of everything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from xw_operator.devices import DevicesConfig, parse_devices_config
from xw_operator.errors import ConfigError
from xw_operator.k8s.client import ApiError, KubeApi, object_path
from xw_operator.recipes import MODELS_FILE, RUNTIME_PARAMS_FILE, parse_recipes

if TYPE_CHECKING:
    from xw_operator.k8s.last_good import LastGoodStore

log = logging.getLogger(__name__)

CONFIGMAP_KEY = "devices.yaml"
# Optional keys beside devices.yaml (files beside it, keys of the same ConfigMap): the model recipes.
RECIPE_KEYS = (MODELS_FILE, RUNTIME_PARAMS_FILE)


@dataclass(frozen=True)
class Snapshot:
    """Raw text of one version of devices.yaml (plus the recipe files found with it) and where it came from."""

    text: str
    origin: str  # human-readable: a path or ConfigMap ns/name
    extras: tuple[tuple[str, str], ...] = ()  # (models.yaml | runtime_params.yaml, text) when present

    @property
    def digest(self) -> str:
        blob = self.text + "".join(f"\0{k}\0{v}" for k, v in self.extras)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def parse_snapshot(snapshot: Snapshot) -> DevicesConfig:
    """devices.yaml with its recipes; any invalid part refuses the whole version."""
    config = parse_devices_config(snapshot.text, source=snapshot.origin)
    extras = dict(snapshot.extras)
    where = snapshot.origin.removesuffix(f" key {CONFIGMAP_KEY}")
    recipes = parse_recipes(
        extras.get(MODELS_FILE),
        extras.get(RUNTIME_PARAMS_FILE),
        models_source=f"{where} {MODELS_FILE}",
        params_source=f"{where} {RUNTIME_PARAMS_FILE}",
    )
    return config.with_recipes(recipes)


class Source(Protocol):
    description: str

    def read(self) -> Snapshot:
        """The current text; raises ConfigError when it cannot be read."""
        ...


class FileSource:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.description = f"file {self.path}"

    def read(self) -> Snapshot:
        try:
            text = self.path.read_text(encoding="utf-8")
            extras = tuple(
                (key, (self.path.parent / key).read_text(encoding="utf-8"))
                for key in RECIPE_KEYS
                if (self.path.parent / key).is_file()
            )
        except OSError as exc:
            raise ConfigError(f"cannot read devices config {self.path}: {exc.strerror or exc}") from None
        return Snapshot(text, str(self.path), extras)


class ConfigMapSource:
    def __init__(self, api: KubeApi, reference: str, key: str = CONFIGMAP_KEY) -> None:
        self.namespace, self.name = parse_configmap_reference(reference)
        self.api = api
        self.key = key
        self.description = f"ConfigMap {self.namespace}/{self.name} key {key}"

    def read(self) -> Snapshot:
        origin = f"ConfigMap {self.namespace}/{self.name}"
        try:
            cm = self.api.get(object_path("v1", "configmaps", self.namespace, self.name))
        except ApiError as exc:
            raise ConfigError(f"cannot read {origin}: {exc}") from None
        if cm is None:
            raise ConfigError(f"{origin} does not exist")
        data = cm.get("data") or {}
        if self.key not in data:
            raise ConfigError(f"{origin} has no key {self.key!r} (keys: {', '.join(sorted(data)) or 'none'})")
        extras = tuple((key, str(data[key])) for key in RECIPE_KEYS if key in data)
        return Snapshot(str(data[self.key]), f"{origin} key {self.key}", extras)

    @property
    def involved_object(self) -> dict[str, object]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": self.namespace, "name": self.name}}


def parse_configmap_reference(reference: str) -> tuple[str, str]:
    namespace, sep, name = reference.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ConfigError(f"--devices-configmap must be NAMESPACE/NAME, got {reference!r}")
    return namespace, name


def chip_fingerprints(config: DevicesConfig) -> dict[str, str]:
    """Per chip key (config_key and variant_key), a digest of everything resolve() reads for it."""
    out = {}
    for key in config.chip_keys:
        ref = config.find_chip(key)
        assert ref is not None
        doc = {
            "vendor": ref.vendor.vendor_id,
            "chip": ref.chip.model_dump(mode="json"),
            "variant": ref.variant.model_dump(mode="json") if ref.variant else None,
        }
        out[key] = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return out


def changed_chips(old: DevicesConfig, new: DevicesConfig) -> set[str]:
    """Chip keys whose profile differs, appeared or disappeared.

    Engine definitions and recipes apply across chips: when either changed, every chip counts as changed.
    """
    before, after = chip_fingerprints(old), chip_fingerprints(new)
    if old.engines != new.engines or old.recipes != new.recipes:
        return set(before) | set(after)
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


@dataclass(frozen=True)
class Change:
    old: DevicesConfig | None
    new: DevicesConfig
    chips: frozenset[str]
    digest: str
    everything: bool = False  # the first valid version after none: every instance is affected


@dataclass
class ConfigState:
    """What the health endpoint shows about devices.yaml."""

    source: str
    digest: str | None
    last_error: str | None = None
    rejected_digest: str | None = None
    reloads: int = 0
    chips: list[str] = field(default_factory=list)
    in_force: str = "source"  # source | last-good | none
    pending: list[str] = field(default_factory=list)  # chip keys whose instances a reload has yet to reach


class NoDevicesConfig(RuntimeError):
    """No valid devices.yaml was ever seen: nothing can be reconciled."""


class ConfigStore:
    """The last good DevicesConfig plus the bookkeeping of reloads. Thread-safe.

    Never raises at construction: see the module docstring for what happens with an invalid start."""

    def __init__(self, source: Source, last_good: LastGoodStore | None = None) -> None:
        self.source = source
        self.last_good = last_good
        self._lock = threading.Lock()
        self._config: DevicesConfig | None = None
        self.state = ConfigState(source.description, None)
        self.startup_error: ConfigError | None = None
        try:
            snapshot = source.read()
        except ConfigError as exc:
            self._start_invalid(exc, f"unreadable:{exc}")
            return
        try:
            config = parse_snapshot(snapshot)
        except ConfigError as exc:
            self._start_invalid(exc, snapshot.digest)
            return
        self._accept(snapshot, config)

    def _start_invalid(self, error: ConfigError, digest: str) -> None:
        # Reported once by the runner (startup_error); the poll loop then stays quiet until it changes.
        self.startup_error = error
        self.state.last_error = str(error)
        self.state.rejected_digest = digest
        self._start_from_last_good(error)

    def _start_from_last_good(self, error: ConfigError) -> None:
        stored = self.last_good.load() if self.last_good is not None else None
        if stored is None:
            self.state.in_force = "none"
            log.error("devices config invalid at start-up and no last good version is stored: %s", error)
            return
        digest = stored.digest
        try:
            config = parse_snapshot(stored)
        except ConfigError as exc:  # written by an older operator that accepted something this one refuses
            self.state.in_force = "none"
            log.error("the stored last good devices config is not valid either: %s", exc)
            return
        self._config = config
        self.state.digest = digest
        self.state.chips = config.chip_keys
        self.state.in_force = "last-good"
        log.warning("devices config invalid at start-up; running on the last good version %s: %s", digest, error)

    def _accept(self, snapshot: Snapshot, config: DevicesConfig) -> DevicesConfig | None:
        with self._lock:
            old, self._config = self._config, config
        self.state.digest = snapshot.digest
        self.state.last_error = self.state.rejected_digest = None
        self.state.chips = config.chip_keys
        self.state.in_force = "source"
        if self.last_good is not None:
            self.last_good.save(snapshot)
        return old

    @property
    def ready(self) -> bool:
        """A configuration is in force (from the source or the persisted last good one)."""
        with self._lock:
            return self._config is not None

    @property
    def current(self) -> DevicesConfig:
        with self._lock:
            if self._config is None:
                raise NoDevicesConfig(f"no valid devices config yet: {self.state.last_error}")
            return self._config

    def health(self) -> dict[str, Any]:
        """The devicesConfig section of /healthz."""
        s = self.state
        out: dict[str, Any] = {
            "source": s.source,
            "digest": s.digest,
            "inForce": s.in_force,
            "reloads": s.reloads,
            "lastError": s.last_error,
            "chips": len(s.chips),
            "pendingReload": list(s.pending),
        }
        if s.in_force == "none":
            out["reconciling"] = False
            out["why"] = f"no valid devices.yaml seen yet, nothing is reconciled: {s.last_error}"
        else:
            out["reconciling"] = True
        return out

    def poll(self) -> Change | ConfigError | None:
        """Read the source once: a Change when a valid new version took effect, the error when the new
        version was refused (reported once per distinct content), None when nothing changed."""
        try:
            snapshot = self.source.read()
        except ConfigError as exc:
            return self._refuse(str(exc), digest=f"unreadable:{exc}")
        if snapshot.digest == self.state.digest:
            if self.state.last_error is not None or self.state.in_force != "source":
                log.info("devices config is back to the version in force (%s)", snapshot.digest)
                self.state.last_error = self.state.rejected_digest = None
                self.state.in_force = "source"
            return None
        try:
            new = parse_snapshot(snapshot)
        except ConfigError as exc:
            return self._refuse(str(exc), digest=snapshot.digest)
        old = self._accept(snapshot, new)
        self.state.reloads += 1
        if old is None:
            return Change(None, new, frozenset(new.chip_keys), snapshot.digest, everything=True)
        return Change(old, new, frozenset(changed_chips(old, new)), snapshot.digest)

    def _refuse(self, message: str, *, digest: str) -> ConfigError | None:
        if self.state.rejected_digest == digest:
            return None  # already reported; the poll loop must not spam logs and events
        self.state.last_error = message
        self.state.rejected_digest = digest
        return ConfigError(message)


class ConfigWatcher:
    """Polls a ConfigStore in a daemon thread and hands results to callbacks."""

    def __init__(
        self,
        store: ConfigStore,
        *,
        interval: float,
        on_change: Callable[[Change], None],
        on_error: Callable[[ConfigError], None],
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.interval = interval
        self.on_change = on_change
        self.on_error = on_error
        self.on_idle = on_idle  # called on polls without news: retries a reload that did not reach everything
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="devices-config-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                result = self.store.poll()
                if isinstance(result, Change):
                    self.on_change(result)
                elif isinstance(result, ConfigError):
                    self.on_error(result)
                elif self.on_idle is not None:
                    self.on_idle()
            except Exception:  # the watcher must survive anything; the next poll retries
                log.exception("devices config watcher: unexpected error")
