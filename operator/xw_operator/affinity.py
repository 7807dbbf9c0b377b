"""``spec.affinity``: the core/v1 Affinity schema, typed, so the API server and the operator refuse what
the Deployment would be refused for (a string where a list belongs, an unknown operator, a missing
``topologyKey``) before anything is rendered.

The models follow ``k8s.io/api/core/v1`` field by field (names, required fields, enums, weight 1-100);
rules the API server checks only on the pod (values given with ``Exists``, ``Gt`` with two values) are
checked here too, in Python, so they end as status ``Failed`` with our message instead of a 422 loop.
``to_kubernetes`` gives back the camelCase dict the renderer puts into the pod template.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

# Label keys and values: the API server checks the full syntax on the pod; lengths here keep CEL and
# the CRD's size estimates bounded.
_KEY = Field(min_length=1, max_length=316, description="Label key (or field name for matchFields).")
_MAX_ITEMS = 64


def _optional_list(description: str) -> Any:
    """An optional list field of core/v1 (omitted: null), capped so CEL cost and CRD size stay bounded."""
    return Field(None, max_length=_MAX_ITEMS, description=description)


class _K8sModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
    )


def _check_values(operator: str, values: list[str] | None, numeric: tuple[str, ...]) -> None:
    given = values or []
    if operator in ("In", "NotIn") and not given:
        raise ValueError(f"operator {operator} needs at least one value")
    if operator in ("Exists", "DoesNotExist") and given:
        raise ValueError(f"operator {operator} takes no values")
    if operator in numeric and (len(given) != 1 or not re.fullmatch(r"-?[0-9]{1,18}", given[0])):
        raise ValueError(f"operator {operator} needs exactly one integer value")


class NodeSelectorRequirement(_K8sModel):
    """A node label (or field) requirement."""

    key: str = _KEY
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="In, NotIn, Exists, DoesNotExist, Gt or Lt."
    )
    values: list[str] | None = _optional_list(
        "Values: one or more for In/NotIn, none for Exists, one integer for Gt/Lt."
    )

    @model_validator(mode="after")
    def _values_fit_operator(self) -> NodeSelectorRequirement:
        _check_values(self.operator, self.values, ("Gt", "Lt"))
        return self


class NodeSelectorTerm(_K8sModel):
    """Requirements that must all hold (an empty term matches no node)."""

    match_expressions: list[NodeSelectorRequirement] | None = _optional_list("Requirements on node labels.")
    match_fields: list[NodeSelectorRequirement] | None = _optional_list("Requirements on node fields (metadata.name).")


class NodeSelector(_K8sModel):
    """Terms ORed together."""

    node_selector_terms: list[NodeSelectorTerm] = Field(
        min_length=1, max_length=_MAX_ITEMS, description="At least one term; a node matching any term is chosen."
    )


class PreferredSchedulingTerm(_K8sModel):
    """A weighted node preference."""

    weight: int = Field(ge=1, le=100, description="Weight 1-100 added to a node matching the preference.")
    preference: NodeSelectorTerm = Field(description="The node requirements.")


class NodeAffinity(_K8sModel):
    """Node affinity: which nodes the pods may or should run on."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        None, description="Nodes the pods must run on."
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = _optional_list(
        "Nodes the scheduler prefers."
    )


class LabelSelectorRequirement(_K8sModel):
    """A pod label requirement."""

    key: str = _KEY
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[str] | None = _optional_list("Values: one or more for In/NotIn, none for Exists/DoesNotExist.")

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        _check_values(self.operator, self.values, ())
        return self


class LabelSelector(_K8sModel):
    """Selects pods by label (all given conditions must hold)."""

    match_labels: dict[str, str] | None = Field(None, description="Labels that must all match.")
    match_expressions: list[LabelSelectorRequirement] | None = _optional_list("Requirements that must all hold.")


class PodAffinityTerm(_K8sModel):
    """Pods (by label and namespace) that must or must not run in the same topology domain."""

    label_selector: LabelSelector | None = Field(None, description="Pods this term is about.")
    namespace_selector: LabelSelector | None = Field(None, description="Namespaces of those pods (by label).")
    namespaces: list[str] | None = _optional_list("Namespaces of those pods.")
    topology_key: str = Field(
        min_length=1, max_length=316, description="Node label defining 'co-located', e.g. kubernetes.io/hostname."
    )
    match_label_keys: list[str] | None = _optional_list("Pod label keys whose values are added to labelSelector.")
    mismatch_label_keys: list[str] | None = _optional_list("Pod label keys whose values must differ.")


class WeightedPodAffinityTerm(_K8sModel):
    """A weighted pod affinity term."""

    weight: int = Field(ge=1, le=100, description="Weight 1-100.")
    pod_affinity_term: PodAffinityTerm = Field(description="The term.")


class PodAffinity(_K8sModel):
    """Co-location (podAffinity) or separation (podAntiAffinity) rules."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = _optional_list(
        "Terms that must hold."
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = _optional_list(
        "Terms the scheduler prefers."
    )


class Affinity(_K8sModel):
    """Pod scheduling constraints (core/v1 Affinity)."""

    node_affinity: NodeAffinity | None = Field(None, description="Node affinity.")
    pod_affinity: PodAffinity | None = Field(None, description="Co-locate with other pods.")
    pod_anti_affinity: PodAffinity | None = Field(None, description="Keep away from other pods.")

    def to_kubernetes(self) -> dict[str, Any]:
        """The camelCase dict for a pod spec (unset fields left out)."""
        result: dict[str, Any] = self.model_dump(by_alias=True, exclude_none=True)
        return result
