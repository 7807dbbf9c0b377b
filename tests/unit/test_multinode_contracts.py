"""Multi-node contracts are part of the engine definitions: an administrator adds or overrides one under
devices.yaml's ``engines:`` (no release), and a broken one is refused with one line naming the file and
the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import builders
from xw_operator.cli import main
from xw_operator.devices import DevicesConfig, parse_devices_config
from xw_operator.engines import FIELD_REFS, MULTI_NODE_PLACEHOLDERS, shipped_engines_path
from xw_operator.errors import ConfigError, ResolveError
from xw_operator.instance import parse_instance
from xw_operator.multinode import placeholders
from xw_operator.plan import resolve
from xw_operator.render_lws import render_workload

SHIPPED = yaml.safe_load(shipped_engines_path().read_text(encoding="utf-8"))["engines"]


def shipped(key: str) -> dict[str, Any]:
    """A shipped definition as an administrator would copy it into devices.yaml."""
    return copy.deepcopy(SHIPPED[key])


def config_with(engines: dict[str, Any]) -> DevicesConfig:
    doc = builders.devices_doc()
    doc["engines"] = engines
    return parse_devices_config(builders.devices_text(doc), source="devices.yaml")


def body(engine: str = "vllm", chip: str = "ascend-910b", count: int = 8, nodes: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "xw.dev/v1alpha1",
        "kind": "ModelInstance",
        "metadata": {"name": "big", "namespace": "llm"},
        "spec": {
            "model": {"name": "org/big", "source": {"huggingFace": {"repo": "org/big"}}},
            "engine": {"name": engine},
            "devices": {"chip": chip, "count": count, "nodes": nodes},
        },
    }


def containers(config: DevicesConfig, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The leader's and a worker's engine container."""
    inst = parse_instance(body(**kw))
    lws = render_workload(inst, resolve(inst, config).bind(None))[0]
    assert lws["kind"] == "LeaderWorkerSet"
    templates = lws["spec"]["leaderWorkerTemplate"]
    leader, worker = (templates[t]["spec"]["containers"][0] for t in ("leaderTemplate", "workerTemplate"))
    return leader, worker


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# ------------------------------------------------------------------------------------ added, overridden


def test_an_admin_contract_lets_an_engine_without_one_run_on_several_nodes() -> None:
    plain = config_with({})
    refusal = r"engine mlguider has no multi-node contract \(engines with one: mindie, vllm\)"
    with pytest.raises(ResolveError, match=refusal):
        resolve(parse_instance(body("mlguider", chip="ascend-310p")), plain)

    mlguider = shipped("mlguider")
    mlguider["multi_node"] = {
        "env": {"NODE_IP": {"fieldRef": "status.hostIP"}, "RANK": "$(LWS_WORKER_INDEX)", "NODES": "{nodes}"},
        "worker": {"env": {"ROLE": "worker"}},
    }
    leader, worker = containers(config_with({"mlguider": mlguider}), engine="mlguider", chip="ascend-310p", nodes=3)
    for c in (leader, worker):
        variables = env(c)
        assert variables["NODE_IP"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
        assert variables["RANK"] == "$(LWS_WORKER_INDEX)" and variables["NODES"] == "3"
        assert variables["ORIGIN_MODEL_PATH"] == "org/big"  # the engine's own single-node contract stays
        assert "command" not in c  # the image's entrypoint, as on one node
    assert env(worker)["ROLE"] == "worker" and "ROLE" not in env(leader)
    assert "readinessProbe" in leader and "readinessProbe" not in worker and "ports" not in worker


def test_an_admin_override_of_vllm_changes_the_leaders_wrap_and_variables() -> None:
    before_leader, before_worker = containers(config_with({}))
    vllm = shipped("vllm")
    contract = vllm["multi_node"]
    contract["env"]["GLOO_SOCKET_IFNAME"] = "eth1"
    contract["vendors"]["huawei"]["leader"]["wrap"] = [
        "/bin/sh", "-c", "my-ray-head --npus={device_count} --peers={nodes} && exec \"$@\"", "xw-leader",
    ]  # fmt: skip
    contract["vendors"]["huawei"]["env"]["HCCL_CONNECT_TIMEOUT"] = "600"
    leader, worker = containers(config_with({"vllm": vllm}))

    assert leader["command"] == [
        "/bin/sh", "-c", 'my-ray-head --npus=8 --peers=2 && exec "$@"', "xw-leader", "vllm", "serve", "org/big",
    ]  # fmt: skip
    assert before_leader["command"][2].startswith("ray start --head")
    assert leader["args"] == before_leader["args"]
    for c in (leader, worker):
        assert env(c)["GLOO_SOCKET_IFNAME"] == "eth1" and env(c)["HCCL_CONNECT_TIMEOUT"] == "600"
    assert worker["command"] == before_worker["command"]  # what the override did not touch stays


def test_a_vendor_overlay_applies_to_that_vendors_chips_only() -> None:
    vllm = shipped("vllm")
    vllm["multi_node"]["vendors"]["nvidia"] = {
        "env": {"NCCL_SOCKET_IFNAME": "eth0"},
        "worker": {"command": ["/bin/sh", "-c", "exec nvidia-ray-worker --gpus={device_count}"]},
    }
    config = config_with({"vllm": vllm})
    leader, worker = containers(config, chip="nvidia-t4", count=4)
    assert env(leader)["NCCL_SOCKET_IFNAME"] == "eth0" and env(worker)["NCCL_SOCKET_IFNAME"] == "eth0"
    assert worker["command"] == ["/bin/sh", "-c", "exec nvidia-ray-worker --gpus=4"]
    assert "HCCL_IF_IP" not in env(leader)  # the huawei overlay stays with huawei chips
    assert leader["command"][2].startswith("ray start --head") and "--num-gpus=4" in leader["command"][2]

    ascend_leader, ascend_worker = containers(config)
    assert "NCCL_SOCKET_IFNAME" not in env(ascend_leader) and "NCCL_SOCKET_IFNAME" not in env(ascend_worker)
    assert "nvidia-ray-worker" not in ascend_worker["command"][2] and "HCCL_IF_IP" in env(ascend_worker)


def test_a_definition_without_a_contract_refuses_several_nodes_like_before() -> None:
    vllm = shipped("vllm")
    del vllm["multi_node"]  # an override copied from an older engines.yaml
    with pytest.raises(ResolveError) as caught:
        resolve(parse_instance(body()), config_with({"vllm": vllm}))
    assert str(caught.value) == (
        "spec.devices.nodes is 2 but engine vllm has no multi-node contract (engines with one: mindie); "
        "use one of them or nodes: 1"
    )


def test_an_engine_chosen_by_image_names_the_definition_without_a_contract() -> None:
    doc = builders.devices_doc()
    doc["policy"]["allowed_image_prefixes"] = ["harbor.tsingmao.com"]
    config = parse_devices_config(builders.devices_text(doc), source="devices.yaml")
    data = body()
    data["spec"]["engine"]["image"] = "harbor.tsingmao.com/xw-cli/vllm-ascend:v1"
    with pytest.raises(ResolveError, match=r"engine vllm starts with definition vllm-xw \(chosen by the image\)"):
        resolve(parse_instance(data), config)


# --------------------------------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    ("contract", "path", "message"),
    [
        ({"leader": {"wrapp": ["sh"]}}, "multi_node.leader.wrapp", "unknown field"),
        ({"env": {"X": {"fieldRef": "metadata.annotations['secret']"}}}, "multi_node.env.X", "is not allowed"),
        ({"env": {"X": {"fieldRef": "spec.serviceAccountName"}}}, "multi_node.env.X", "is not allowed"),
        ({"env": {"X": {"fieldRef": "status.podIP", "apiVersion": "v1"}}}, "multi_node.env.X", "{fieldRef: <field>}"),
        ({"vendors": {"huawei": {"env": {"X": 1800}}}}, "multi_node.vendors.huawei.env.X", "quote numbers"),
        ({"worker": {"wrap": ["sh", "-c", "x"]}}, "multi_node.worker.wrap", "only the leader wraps"),
        ({"leader": {"serves": False}}, "multi_node.leader.serves", "the leader always serves"),
        ({"leader": {"args": [["--x", "{devce_count}"]]}}, r"multi_node.leader.args\[0\]\[1\]", r"\{devce_count\}"),
        ({"worker": {"command": ["ray", "--n={nodes|2}"]}}, r"multi_node.worker.command\[1\]", "no defaults"),
        ({"leader": {"wrap": ["sh"], "command": ["x"]}}, "multi_node.leader", "not both"),
        ({"worker": {"command": ["ray"], "args": [["--x", "1"]]}}, "multi_node.worker", "takes no args"),
        (
            {"worker": {"command": ["ray"]}, "vendors": {"nvidia": {"worker": {"args": [["--x", "1"]]}}}},
            "multi_node",
            "vendors.nvidia.worker: .* takes no args",
        ),
        ({"vendors": {"Huawei": {}}}, "multi_node.vendors", "lower case"),
    ],
)
def test_a_broken_contract_in_devices_yaml_is_one_line_naming_the_field(
    tmp_path: Path, contract: dict[str, Any], path: str, message: str
) -> None:
    vllm = shipped("vllm")
    vllm["multi_node"] = contract
    doc = builders.devices_doc()
    doc["engines"] = {"vllm": vllm}
    with pytest.raises(ConfigError, match=rf"^devices\.yaml: engines\.vllm\.{path}: .*{message}") as caught:
        parse_devices_config(builders.devices_text(doc), source="devices.yaml")
    assert "\n" not in str(caught.value)

    devices = tmp_path / "devices.yaml"
    devices.write_text(builders.devices_text(doc), encoding="utf-8")
    mi = builders.write_yaml(tmp_path / "mi.yaml", body())
    result = CliRunner().invoke(main, ["render", "-f", str(mi), "--devices-config", str(devices)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: {devices}: engines.vllm.") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_leader_wrap_needs_the_definitions_command() -> None:
    mindie = shipped("mindie")
    mindie["multi_node"]["vendors"] = {"huawei": {"leader": {"wrap": ["/bin/sh", "-c", 'start && exec "$@"']}}}
    with pytest.raises(ConfigError, match=r"engines\.mindie: multi_node\.vendors\.huawei\.leader\.wrap: wraps"):
        config_with({"mindie": mindie})


def test_every_allowed_pod_field_reaches_the_pod_as_a_field_ref() -> None:
    vllm = shipped("vllm")
    vllm["multi_node"]["env"] = {f"F{i}": {"fieldRef": f} for i, f in enumerate(FIELD_REFS)}
    leader, _ = containers(config_with({"vllm": vllm}))
    assert [env(leader)[f"F{i}"] for i in range(len(FIELD_REFS))] == [
        {"fieldRef": {"fieldPath": f}} for f in FIELD_REFS
    ]


def test_the_retired_empty_roles_field_still_loads_and_a_filled_one_is_refused() -> None:
    vllm = shipped("vllm")
    vllm["roles"] = {}
    assert config_with({"vllm": vllm}).engines["vllm"].multi_node is not None
    vllm["roles"] = {"leader": {"command": ["x"]}}
    with pytest.raises(ConfigError, match=r"engines\.vllm: roles: was reserved and never used; .* multi_node"):
        config_with({"vllm": vllm})


def test_the_admin_example_in_docs_engines_md_loads_and_renders() -> None:
    text = (builders.REPO / "docs" / "engines.md").read_text(encoding="utf-8")
    example = next(b for b in text.split("```yaml\n") if b.startswith("# devices.yaml"))
    engines = yaml.safe_load(example.split("```", 1)[0])["engines"]
    leader, worker = containers(config_with(engines))
    assert leader["command"][2] == '/opt/site/ray-head.sh --npus=8 && exec "$@"'
    assert worker["command"][2] == 'exec /opt/site/ray-worker.sh "${LWS_LEADER_ADDRESS}:6379" 8'
    assert env(worker)["HCCL_CONNECT_TIMEOUT"] == "3600"


def test_the_placeholders_a_contract_may_use_are_exactly_those_it_is_given() -> None:
    inst = parse_instance(body())
    plan = resolve(inst, config_with({})).bind(None)
    assert sorted(placeholders(plan)) == sorted(MULTI_NODE_PLACEHOLDERS)
