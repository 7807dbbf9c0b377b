"""A ModelInstance that names a catalog model, completed from its recipe. Pure.

:func:`expand` is idempotent and runs before anything reads the spec's source, engine or device count:
``resolve`` calls it, and so does the Docker runtime before it allocates devices (the count may come from
the recipe). What the spec sets always wins; the recipe only fills gaps.
"""

from __future__ import annotations

from xw_operator.devices import DevicesConfig
from xw_operator.errors import UnknownChip
from xw_operator.instance import HuggingFaceSource, ModelInstance, ModelSource
from xw_operator.recipes import RecipeChoice, choose


def chip_keys(config: DevicesConfig, chip: str) -> list[str]:
    """The keys a recipe is looked up by: the named key, then its base model's config_key."""
    ref = config.find_chip(chip)
    if ref is None:
        raise UnknownChip(f"unknown chip {chip!r}; known chips: {', '.join(config.chip_keys) or 'none'}")
    return list(dict.fromkeys([ref.key, ref.chip.config_key]))


def recipe_for(instance: ModelInstance, config: DevicesConfig) -> RecipeChoice | None:
    spec = instance.spec
    if spec.model.catalog is None:
        return None
    explicit_engine = spec.engine.name if "name" in spec.engine.model_fields_set else None
    return choose(config.recipes, spec.model.catalog, chip_keys(config, spec.devices.chip), explicit_engine)


def expand(instance: ModelInstance, config: DevicesConfig) -> tuple[ModelInstance, RecipeChoice | None]:
    """The instance with source, engine and device count filled from its catalog recipe (if it names one)."""
    recipe = recipe_for(instance, config)
    if recipe is None:
        return instance, None
    spec = instance.spec
    model = spec.model
    if model.source is None:
        hub = ModelSource(hugging_face=HuggingFaceSource(repo=recipe.model.source_id))
        model = model.model_copy(update={"source": hub})
    engine = spec.engine.model_copy(update={"name": recipe.engine})  # update marks the field as set
    devices = spec.devices
    if "count" not in devices.model_fields_set and recipe.world_size and devices.indices is None:
        devices = devices.model_copy(update={"count": recipe.world_size})
    new_spec = spec.model_copy(update={"model": model, "engine": engine, "devices": devices})
    return instance.model_copy(update={"spec": new_spec}), recipe
