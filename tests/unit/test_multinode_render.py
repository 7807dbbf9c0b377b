"""Multi-node instances: the API rules, the LeaderWorkerSet rendering, the engine contracts, the Docker
refusal and the operator's MultiNodeDisabled refusal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from xw_operator.cli import main
from xw_operator.crd import crd_manifest
from xw_operator.devices import DevicesConfig, load_devices_config, packaged_devices_config_path
from xw_operator.errors import ConfigError, ManifestError, ResolveError
from xw_operator.instance import (
    MSG_NODES_SWITCH,
    MSG_PARALLELISM,
    MSG_TOPOLOGY_SINGLE,
    ModelInstance,
    parse_instance,
)
from xw_operator.k8s.reconcile import InvalidSpec, desired_state
from xw_operator.multinode import MultiNodeNotSupported, parse_contracts, role_spec
from xw_operator.plan import resolve
from xw_operator.render_lws import LWS_GROUP_KEY_LABEL, ROLE_KEY, render_lws, render_workload

UID = "0b0e6f4e-5f7a-4a43-9d43-1b6f6c1f2f00"


@pytest.fixture(scope="module")
def config() -> DevicesConfig:
    return load_devices_config(packaged_devices_config_path())


def body(chip: str = "ascend-910b", count: int = 8, nodes: int = 2, **spec: Any) -> dict[str, Any]:
    devices = {"chip": chip, "count": count, "nodes": nodes, **spec.pop("devices", {})}
    return {
        "apiVersion": "xw.dev/v1alpha1",
        "kind": "ModelInstance",
        "metadata": {"name": "big", "namespace": "llm", "uid": UID},
        "spec": {
            "model": {"name": "org/big", "source": {"huggingFace": {"repo": "org/big"}}},
            "engine": spec.pop("engine", {"name": "vllm"}),
            "devices": devices,
            **spec,
        },
    }


def instance(**kw: Any) -> ModelInstance:
    return parse_instance(body(**kw))


def render(config: DevicesConfig, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    inst = instance(**kw)
    objects = render_workload(inst, resolve(inst, config).bind(None))
    assert [o["kind"] for o in objects] == ["LeaderWorkerSet", "Service"]
    return objects[0], objects[1]


def engine(template: dict[str, Any]) -> dict[str, Any]:
    containers = template["spec"]["containers"]
    assert [c["name"] for c in containers] == ["engine"]
    return dict(containers[0])


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# ------------------------------------------------------------------------------------------------- API


def test_nodes_defaults_to_one_and_single_node_instances_stay_deployments(config: DevicesConfig) -> None:
    doc = body(nodes=1)
    del doc["spec"]["devices"]["nodes"]
    inst = parse_instance(doc)
    assert inst.spec.devices.nodes == 1 and inst.spec.parallel_sizes == (8, 1)
    assert [o["kind"] for o in render_workload(inst, resolve(inst, config).bind(None))] == ["Deployment", "Service"]


@pytest.mark.parametrize("nodes", [0, 65])
def test_nodes_out_of_range_is_refused(nodes: int) -> None:
    with pytest.raises(ManifestError, match="nodes"):
        instance(nodes=nodes)


def test_parallel_sizes_default_to_count_within_a_node_and_nodes_across() -> None:
    assert instance(count=8, nodes=2).spec.parallel_sizes == (8, 2)
    assert instance(count=8, nodes=2, parallelism={"tensor": 16}).spec.parallel_sizes == (16, 1)
    assert instance(count=8, nodes=4, parallelism={"pipeline": 2}).spec.parallel_sizes == (16, 2)
    assert instance(count=8, nodes=2, parallelism={"tensor": 4, "pipeline": 4}).spec.parallel_sizes == (4, 4)


@pytest.mark.parametrize("parallelism", [{"tensor": 8, "pipeline": 3}, {"tensor": 3}, {"pipeline": 5}])
def test_parallel_sizes_must_use_every_accelerator_once(parallelism: dict[str, int]) -> None:
    with pytest.raises(ManifestError, match=r"tensor x parallelism\.pipeline must equal"):
        instance(count=8, nodes=2, parallelism=parallelism)


def test_topology_key_needs_several_nodes() -> None:
    with pytest.raises(ManifestError, match="topologyKey applies to multi-node"):
        instance(nodes=1, devices={"topologyKey": "xw.dev/rack"})


def test_the_crd_enforces_the_same_rules_with_the_same_messages() -> None:
    spec = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    messages = [v["message"] for v in spec["x-kubernetes-validations"]]
    assert MSG_PARALLELISM in messages and MSG_TOPOLOGY_SINGLE in messages and MSG_NODES_SWITCH in messages
    nodes = spec["properties"]["devices"]["properties"]["nodes"]
    assert (nodes["default"], nodes["minimum"], nodes["maximum"]) == (1, 1, 64)
    assert "LeaderWorkerSet" in nodes["description"]
    assert set(spec["properties"]["parallelism"]["properties"]) == {"tensor", "pipeline"}


def test_count_above_a_hosts_capacity_points_at_nodes(config: DevicesConfig) -> None:
    inst = instance(count=16, nodes=1)
    with pytest.raises(ResolveError, match=r"8 devices per host; spread a larger replica .* spec\.devices\.nodes"):
        resolve(inst, config)


# ------------------------------------------------------------------------------------------- rendering


def test_two_nodes_of_eight_npus_is_one_group_of_two_with_the_whole_sandbox(config: DevicesConfig) -> None:
    lws, _ = render(config, replicas=1)
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert lws["metadata"]["name"] == "big-lws" and lws["metadata"]["namespace"] == "llm"
    assert lws["metadata"]["ownerReferences"][0]["uid"] == UID
    spec = lws["spec"]
    assert spec["replicas"] == 1 and spec["leaderWorkerTemplate"]["size"] == 2
    assert spec["startupPolicy"] == "LeaderCreated"
    assert spec["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    for role in ("leaderTemplate", "workerTemplate"):
        template = spec["leaderWorkerTemplate"][role]
        pod, c = template["spec"], engine(template)
        assert c["resources"]["limits"] == {"huawei.com/Ascend910": 8}
        assert pod["nodeSelector"] == {"kubernetes.io/arch": "arm64", "accelerator": "huawei-Ascend910"}
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/usr/local/Ascend/driver/lib64/"]["readOnly"]
        shm = next(v for v in pod["volumes"] if v["name"] == "shm")
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "100Gi"} and "/dev/shm" in mounts
        assert c["securityContext"]["capabilities"]["add"] == ["SYS_ADMIN", "SYS_RAWIO", "IPC_LOCK", "SYS_RESOURCE"]
        # one pod of a group per node; groups are told apart by LWS's group-key label
        anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert anti == [
            {
                "labelSelector": {"matchLabels": {"xw.dev/model-instance": "big"}},
                "matchLabelKeys": [LWS_GROUP_KEY_LABEL],
                "topologyKey": "kubernetes.io/hostname",
            }
        ]
        assert "podAffinity" not in pod["affinity"]


def test_leader_runs_the_ray_head_and_vllm_with_tensor_times_pipeline(config: DevicesConfig) -> None:
    lws, _ = render(config, engine={"name": "vllm", "args": ["--max-model-len=32768"]})
    leader = engine(lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"])
    assert leader["command"][:2] == ["/bin/sh", "-c"]
    assert "ray start --head --port=6379" in leader["command"][2] and 'exec "$@"' in leader["command"][2]
    assert leader["command"][3:] == ["xw-leader", "vllm", "serve", "org/big"]
    args = leader["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "8"
    assert args[args.index("--pipeline-parallel-size") + 1] == "2"
    assert args[args.index("--distributed-executor-backend") + 1] == "ray"
    assert "--max-model-len=32768" in args and args.count("--pipeline-parallel-size") == 1
    assert leader["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert leader["readinessProbe"]["httpGet"]["path"] == "/v1/models"


def test_workers_join_the_leaders_ray_head_and_serve_no_http(config: DevicesConfig) -> None:
    lws, _ = render(config)
    worker = engine(lws["spec"]["leaderWorkerTemplate"]["workerTemplate"])
    assert worker["command"][:2] == ["/bin/sh", "-c"]
    assert 'ray start --address="${LWS_LEADER_ADDRESS}:6379" --block' in worker["command"][2]
    assert "args" not in worker
    for key in ("ports", "startupProbe", "livenessProbe", "readinessProbe"):
        assert key not in worker


def test_vllm_ascend_gets_hccl_bound_to_the_pod_ip_and_ray_counts_npus(config: DevicesConfig) -> None:
    lws, _ = render(config)
    for role in ("leaderTemplate", "workerTemplate"):
        c = engine(lws["spec"]["leaderWorkerTemplate"][role])
        variables = env(c)
        assert variables["HCCL_IF_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert variables["VLLM_HOST_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert variables["RAY_EXPERIMENTAL_NOSET_ASCEND_RT_VISIBLE_DEVICES"] == "1"
        assert "ASCEND_VISIBLE_DEVICES" not in variables  # the device plugin's, never static
        assert """--resources='{"NPU": 8}'""" in c["command"][2]


def test_nvidia_multi_node_has_no_ascend_variables(config: DevicesConfig) -> None:
    lws, _ = render(config, chip="nvidia-t4", count=4, nodes=2)
    leader = engine(lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"])
    assert "HCCL_IF_IP" not in env(leader) and "--num-gpus=4" in leader["command"][2]
    assert leader["resources"]["limits"] == {"nvidia.com/gpu": 4}


def test_user_flags_and_env_win_over_the_contract(config: DevicesConfig) -> None:
    lws, _ = render(
        config,
        engine={
            "name": "vllm",
            "args": ["--distributed-executor-backend=mp"],
            "env": [{"name": "HCCL_CONNECT_TIMEOUT", "value": "60"}],
        },
    )
    leader = engine(lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"])
    assert (
        "--distributed-executor-backend" not in leader["args"] and "--distributed-executor-backend=mp" in leader["args"]
    )
    assert env(leader)["HCCL_CONNECT_TIMEOUT"] == "60"


def test_explicit_parallelism_reaches_the_engine(config: DevicesConfig) -> None:
    lws, _ = render(config, parallelism={"tensor": 16})
    args = engine(lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"])["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "16"
    assert args[args.index("--pipeline-parallel-size") + 1] == "1"


def test_mindie_contract_passes_master_address_rank_and_rank_table(config: DevicesConfig) -> None:
    lws, _ = render(config, engine={"name": "mindie"}, count=8, nodes=4)
    for role in ("leaderTemplate", "workerTemplate"):
        c = engine(lws["spec"]["leaderWorkerTemplate"][role])
        assert "command" not in c  # the image's entrypoint on every node
        variables = env(c)
        assert variables["MASTER_IP"] == "$(LWS_LEADER_ADDRESS)"  # expanded by the kubelet, not escaped
        assert variables["NODE_RANK"] == "$(LWS_WORKER_INDEX)"
        assert variables["WORLD_SIZE"] == "32" and variables["NNODES"] == "4"
        assert variables["MIES_CONTAINER_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert variables["RANKTABLEFILE"].endswith("hccl.json")
    assert "readinessProbe" not in engine(lws["spec"]["leaderWorkerTemplate"]["workerTemplate"])


def test_topology_key_keeps_a_group_in_one_domain(config: DevicesConfig) -> None:
    lws, _ = render(config, devices={"topologyKey": "xw.dev/rack"})
    pod = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]
    assert pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == [
        {
            "labelSelector": {"matchLabels": {"xw.dev/model-instance": "big"}},
            "matchLabelKeys": [LWS_GROUP_KEY_LABEL],
            "topologyKey": "xw.dev/rack",
        }
    ]


def test_the_service_selects_leaders_only_and_keeps_the_instance_name(config: DevicesConfig) -> None:
    lws, svc = render(config)
    assert svc["metadata"]["name"] == "big"
    assert svc["spec"]["selector"] == {"xw.dev/model-instance": "big", ROLE_KEY: "leader"}
    templates = lws["spec"]["leaderWorkerTemplate"]
    assert templates["leaderTemplate"]["metadata"]["labels"][ROLE_KEY] == "leader"
    assert templates["workerTemplate"]["metadata"]["labels"][ROLE_KEY] == "worker"


@pytest.mark.parametrize(
    ("strategy", "rolling"),
    [("Recreate", {"maxUnavailable": "100%", "maxSurge": 0, "partition": 0}),
     ("RollingUpdate", {"maxUnavailable": 0, "maxSurge": 1, "partition": 0})],
)  # fmt: skip
def test_rollout_is_explicit_so_the_lws_webhook_defaults_nothing(
    config: DevicesConfig, strategy: str, rolling: dict[str, Any]
) -> None:
    lws, _ = render(config, strategy=strategy)
    assert lws["spec"]["rolloutStrategy"] == {"type": "RollingUpdate", "rollingUpdateConfiguration": rolling}
    assert lws["spec"]["networkConfig"] == {"subdomainPolicy": "Shared"}


def test_a_long_name_is_refused_before_lws_would_fail(config: DevicesConfig) -> None:
    doc = body()
    doc["metadata"]["name"] = "a" * 41
    inst = parse_instance(doc)
    with pytest.raises(ResolveError, match="at most 40"):
        render_lws(inst, resolve(inst, config).bind(None))


def test_an_engine_without_a_contract_is_refused_with_the_known_ones(config: DevicesConfig) -> None:
    plan = resolve(instance(), config).bind(None)
    contracts = parse_contracts("version: '1'\nengines:\n  mindie:\n    multi_node: {}\n", "test")
    with pytest.raises(ResolveError, match=r"engine vllm has no multi-node contract .*mindie"):
        role_spec(plan, "leader", contracts)


def test_a_contract_file_with_a_typo_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"test: .*leadr"):
        parse_contracts("version: '1'\nengines:\n  vllm:\n    multi_node: {leadr: {}}\n", "test")


# ------------------------------------------------------------------------------------ Docker and CLI


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "mi.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_docker_mode_refuses_a_multi_node_instance_with_exit_2(tmp_path: Path) -> None:
    doc = body()
    del doc["metadata"]["uid"]
    result = CliRunner().invoke(main, ["render", "--backend", "docker", "-f", str(write(tmp_path, doc))])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "ModelInstance big: spec.devices.nodes is 2, but Docker mode runs on one host" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert MultiNodeNotSupported.reason == "MultiNodeNotSupported"


def test_xw_render_shows_the_leaderworkerset_and_service(tmp_path: Path) -> None:
    doc = body()
    del doc["metadata"]["uid"]
    result = CliRunner().invoke(main, ["render", "-f", str(write(tmp_path, doc))])
    assert result.exit_code == 0, result.output
    docs = list(yaml.safe_load_all(result.stdout))
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [("LeaderWorkerSet", "big-lws"), ("Service", "big")]
    assert "ownerReferences" not in docs[0]["metadata"]


# ------------------------------------------------------------------------------------------- operator


def test_an_operator_without_multi_node_support_fails_the_instance(config: DevicesConfig) -> None:
    with pytest.raises(InvalidSpec) as caught:
        desired_state(body(), config, multi_node=False)
    assert caught.value.failure.reason == "MultiNodeDisabled"
    assert "spec.devices.nodes is 2" in caught.value.failure.message
    desired = desired_state(body(), config, multi_node=True)
    assert desired.deployment["kind"] == "LeaderWorkerSet"
    assert desired.deployment["metadata"]["annotations"]["xw.dev/spec-hash"]


def test_single_node_pipeline_parallelism_reaches_vllm_only_when_above_one(config: DevicesConfig) -> None:
    def args(**spec: Any) -> list[str]:
        inst = instance(count=4, nodes=1, **spec)
        (dep, _) = render_workload(inst, resolve(inst, config).bind(None))
        return list(dep["spec"]["template"]["spec"]["containers"][0]["args"])

    split = args(parallelism={"tensor": 2, "pipeline": 2})
    assert split[split.index("--tensor-parallel-size") + 1] == "2"
    assert split[split.index("--pipeline-parallel-size") + 1] == "2"
    assert "--pipeline-parallel-size" not in args()  # the default single-node command line is unchanged
