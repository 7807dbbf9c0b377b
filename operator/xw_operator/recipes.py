"""Model recipes: xw-cli's ``models.yaml`` (the catalog) and ``runtime_params.yaml`` (tuned parameters).

Both load in xw-cli's format unchanged. ``models.yaml`` maps a model id to its source (``source_id``, a
hub repository) and the chip x engine combinations it runs on (``supported_devices: {chip: [vllm:docker,
...]}``); ``runtime_params.yaml`` holds one template per ``<chip>_<model>_<engine>`` with ``key=value``
parameters (``max_model_len=32768``, ``extra_args=...``, ``image=...``) and optional ``envs``.

A ModelInstance names a catalog model with ``spec.model.catalog``; :func:`apply_recipe` fills in what the
spec leaves unset: the source (the hub repository), the served name (the model id), the engine (the first
one the chip supports), the device count (the template's ``world_size``) and the image (``image=``).
The tuned parameters travel to the engine definition, which decides how the engine receives them.
Pure: files are read by :func:`load_recipes`, everything else works on parsed models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from xw_operator.errors import ConfigError, ResolveError
from xw_operator.validation import parse_config_document

MODELS_FILE = "models.yaml"
RUNTIME_PARAMS_FILE = "runtime_params.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


Text = Annotated[str, BeforeValidator(_text)]


class CatalogModel(_Strict):
    """One ``models:`` entry of xw-cli's models.yaml."""

    model_id: str = Field(min_length=1)
    source_id: str = Field(min_length=1)
    parameters: float | None = None
    context_length: int | None = None
    supported_devices: dict[str, list[str]] = Field(min_length=1)
    tag: str | None = None
    capabilities: list[str] = Field(default_factory=list)

    @field_validator("capabilities", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value  # `capabilities:` with nothing under it (xw-cli reads it as empty)

    @field_validator("supported_devices")
    @classmethod
    def _backend_mode(cls, devices: dict[str, list[str]]) -> dict[str, list[str]]:
        for chip, engines in devices.items():
            if not engines:
                raise ValueError(f"{chip}: at least one engine is required")
            for entry in engines:
                if ":" not in entry:
                    raise ValueError(f"{chip}: {entry!r} is not backend:mode (e.g. vllm:docker)")
        return devices

    def engines_for(self, chip_keys: Sequence[str]) -> list[str]:
        """Engine names (the backend part of ``vllm:docker``) for the first of ``chip_keys`` listed."""
        for key in chip_keys:
            if key in self.supported_devices:
                return list(dict.fromkeys(e.split(":", 1)[0] for e in self.supported_devices[key]))
        return []

    def supported_summary(self) -> str:
        return "; ".join(
            f"{chip} ({', '.join(dict.fromkeys(e.split(':', 1)[0] for e in engines))})"
            for chip, engines in self.supported_devices.items()
        )


def _refuse_twice(items: str, key: str, values: list[str]) -> None:
    """A catalog id or template name defined twice is an admin's mistake, named at its second place."""
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{items}[{i}].{key}: {value!r} is defined twice")
        seen.add(value)


class ModelsFile(_Strict):
    version: Text
    models: list[CatalogModel] = Field(min_length=1)
    model_groups: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique(self) -> ModelsFile:
        _refuse_twice("models", "model_id", [m.model_id for m in self.models])
        return self


def _param(value: Any) -> str:
    text = _text(value)
    if not isinstance(text, str) or "=" not in text or not text.split("=", 1)[0].strip():
        raise ValueError(f"expected key=value, got {value!r}")
    return text


class Template(_Strict):
    """One ``templates:`` entry of runtime_params.yaml."""

    name: str = Field(min_length=1)
    params: list[Annotated[str, BeforeValidator(_param)]] | None = None
    envs: dict[str, Text] | None = None

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        out = []
        for p in self.params or []:
            key, value = p.split("=", 1)
            out.append((key.strip(), value.strip()))
        return tuple(out)


class RuntimeParamsFile(_Strict):
    version: Text = "1.0"
    templates: list[Template] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> RuntimeParamsFile:
        _refuse_twice("templates", "name", [t.name for t in self.templates])
        return self


@dataclass(frozen=True)
class Recipes:
    """The catalog and tuned parameters in force (either file may be absent)."""

    models: ModelsFile | None = None
    params: RuntimeParamsFile | None = None
    sources: tuple[str, ...] = ()

    def model(self, model_id: str) -> CatalogModel | None:
        if self.models is None:
            return None
        return next((m for m in self.models.models if m.model_id == model_id), None)

    def template(self, chip_keys: Sequence[str], model_id: str, engine: str) -> Template | None:
        """xw-cli's lookup: ``<variant>_<model>_<engine>``, then ``<config_key>_<model>_<engine>``."""
        if self.params is None:
            return None
        by_name = {t.name: t for t in self.params.templates}
        for key in chip_keys:
            found = by_name.get(f"{key}_{model_id}_{engine}")
            if found is not None:
                return found
        return None


def parse_recipes(
    models_text: str | None,
    params_text: str | None,
    *,
    models_source: str = MODELS_FILE,
    params_source: str = RUNTIME_PARAMS_FILE,
) -> Recipes:
    models = parse_config_document(models_text, models_source, ModelsFile) if models_text is not None else None
    params = parse_config_document(params_text, params_source, RuntimeParamsFile) if params_text is not None else None
    sources = tuple(s for s, t in ((models_source, models_text), (params_source, params_text)) if t is not None)
    return Recipes(models, params, sources)


def load_recipes(directory: Path) -> Recipes:
    """models.yaml and runtime_params.yaml found in ``directory`` (beside devices.yaml); absent ones are None."""

    def read(name: str) -> str | None:
        path = directory / name
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None

    return parse_recipes(
        read(MODELS_FILE),
        read(RUNTIME_PARAMS_FILE),
        models_source=str(directory / MODELS_FILE),
        params_source=str(directory / RUNTIME_PARAMS_FILE),
    )


@dataclass(frozen=True)
class RecipeChoice:
    """What a catalog model contributes to one instance on one chip and engine."""

    model: CatalogModel
    engine: str
    tuned: tuple[tuple[str, str], ...] = ()
    envs: Mapping[str, str] = field(default_factory=dict)
    template: str | None = None

    @property
    def tuned_dict(self) -> dict[str, str]:
        return dict(self.tuned)

    @property
    def image(self) -> str | None:
        return self.tuned_dict.get("image") or None

    @property
    def world_size(self) -> int | None:
        raw = self.tuned_dict.get("world_size", "")
        return int(raw) if raw.isdigit() and int(raw) > 0 else None


def choose(
    recipes: Recipes, model_id: str, chip_keys: Sequence[str], engine: str | None, *, where: str = "spec.model.catalog"
) -> RecipeChoice:
    """The recipe for ``model_id`` on a chip (its variant key first) and engine (None: the first supported).

    An unknown model or an unsupported chip x engine is a ResolveError listing what is supported.
    """
    if recipes.models is None:
        raise ResolveError(f"{where}: {model_id!r} names a catalog model but no models.yaml is loaded")
    model = recipes.model(model_id)
    if model is None:
        known = sorted(m.model_id for m in recipes.models.models)
        shown = ", ".join(known[:40]) + (
            f", ... ({len(known)} in all; `xw models` lists them)" if len(known) > 40 else ""
        )
        raise ResolveError(f"{where}: unknown model {model_id!r}; catalog models: {shown}")
    engines = model.engines_for(chip_keys)
    if not engines:
        raise ResolveError(
            f"{where}: model {model_id} does not support chip {chip_keys[0]}; supported: {model.supported_summary()}"
        )
    chosen = engine or engines[0]
    if chosen not in engines:
        raise ResolveError(
            f"{where}: model {model_id} on chip {chip_keys[0]} supports engines {', '.join(engines)}, not {chosen}"
        )
    template = recipes.template(chip_keys, model_id, chosen)
    return RecipeChoice(
        model=model,
        engine=chosen,
        tuned=template.pairs if template else (),
        envs=dict(template.envs or {}) if template else {},
        template=template.name if template else None,
    )
