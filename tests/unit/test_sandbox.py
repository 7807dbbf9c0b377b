"""Device sandboxes: the merge rule, index matching, and config > code > error selection."""

from __future__ import annotations

import pytest

import builders
from xw_operator.code_sandboxes import CambriconMluSandbox
from xw_operator.devices import DevicesConfig
from xw_operator.errors import ResolveError
from xw_operator.sandbox import ConfigSandbox, SandboxRegistry, select_sandbox


def sandbox(config: DevicesConfig, chip: str, engine: str) -> ConfigSandbox:
    sb = select_sandbox(config, chip, engine)
    assert isinstance(sb, ConfigSandbox)
    return sb


def test_indexed_nodes_only_for_allocated_indices_control_nodes_always(seed_config: DevicesConfig) -> None:
    nodes = [n.host for n in sandbox(seed_config, "ascend-910b", "vllm").device_nodes([3, 5])]
    assert nodes == ["/dev/davinci3", "/dev/davinci5", "/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"]


def test_device_nodes_keep_rwm_permissions(seed_config: DevicesConfig) -> None:
    node = sandbox(seed_config, "ascend-910b", "vllm").device_nodes([0])[0]
    assert str(node) == "/dev/davinci0:/dev/davinci0:rwm"


def test_merge_appends_engine_volumes_to_common(seed_config: DevicesConfig) -> None:
    mounts = [str(v) for v in sandbox(seed_config, "ascend-910b", "mindie").additional_mounts()]
    assert mounts == [
        "/usr/local/dcmi:/usr/local/dcmi",
        "/usr/local/Ascend/driver/lib64/:/usr/local/Ascend/driver/lib64/:ro",
        "/root/.cache:/root/.cache",
        "/var/log/mindie:/var/log/mindie",
    ]


def test_engine_runtime_overrides_common(seed_config: DevicesConfig) -> None:
    assert sandbox(seed_config, "ascend-910b", "mindie").runtime() == "ascend"
    assert sandbox(seed_config, "ascend-910b", "vllm").runtime() == "runc"


def test_runtime_defaults_to_runc(seed_config: DevicesConfig) -> None:
    assert sandbox(seed_config, "ascend-310p", "vllm").runtime() == "runc"


def test_privilege_caps_shm_and_env_come_from_engine_block(seed_config: DevicesConfig) -> None:
    vllm = sandbox(seed_config, "ascend-910b", "vllm")
    mindie = sandbox(seed_config, "ascend-910b", "mindie")
    assert vllm.capabilities() == ["SYS_ADMIN", "IPC_LOCK"]
    assert mindie.capabilities() == ["SYS_ADMIN", "NET_ADMIN"]
    assert mindie.shm_size_bytes() == 512 * 1024**2  # 0.5 GB: floats are honoured
    assert vllm.shm_size_bytes() == 100 * 1024**3
    assert vllm.privileged() is True
    assert vllm.environment([1, 2]) == {
        "ASCEND_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
        "ASCEND_GLOBAL_LOG_LEVEL": "3",
        "ASCEND_RT_VISIBLE_DEVICES": "1,2",
    }
    assert mindie.environment([4]) == {"MINDIE_NPU_DEVICE_IDS": "4"}


def test_missing_shm_uses_seed_default(seed_config: DevicesConfig) -> None:
    assert sandbox(seed_config, "ascend-310p", "mlguider").shm_size_bytes() == 16 * 1024**3


def test_variant_uses_base_sandbox(seed_config: DevicesConfig) -> None:
    sb = sandbox(seed_config, "ascend-910b1", "vllm")
    assert sb.chip_key == "ascend-910b1"
    assert sb.default_image("arm64") == "example.org/vllm-ascend:arm64"


def test_unknown_chip_names_chip_engine_and_known_chips(seed_config: DevicesConfig) -> None:
    with pytest.raises(ResolveError) as exc:
        select_sandbox(seed_config, "ascend-999", "vllm")
    message = str(exc.value)
    assert "unknown chip 'ascend-999'" in message and "engine 'vllm'" in message
    assert "ascend-910b" in message and "metax-c550" in message


def test_engine_without_block_is_a_clear_error(seed_config: DevicesConfig) -> None:
    with pytest.raises(
        ResolveError, match=r"chip 'ascend-310p' has no device sandbox for engine 'mindie'.*mlguider, vllm"
    ):
        select_sandbox(seed_config, "ascend-310p", "mindie")


def test_chip_without_ext_sandboxes_has_no_sandbox(seed_config: DevicesConfig) -> None:
    with pytest.raises(ResolveError, match="engines with a sandbox for this chip: none"):
        select_sandbox(seed_config, "ascend-910-legacy", "vllm")


def test_code_sandbox_used_when_config_has_none(seed_config: DevicesConfig) -> None:
    sb = select_sandbox(seed_config, "cambricon-mlu370", "vllm")
    assert isinstance(sb, CambriconMluSandbox)
    assert [n.host for n in sb.device_nodes([2])] == [
        "/dev/cambricon_ctl",
        "/dev/cambricon_dev2",
        "/dev/cambricon_ipcm2",
    ]


def test_config_entry_for_same_chip_wins_over_code(seed_config: DevicesConfig) -> None:
    data = builders.devices_doc(builders.SEED_DEVICES)
    data["vendors"].append(
        {
            "vendor_name": "Cambricon",
            "vendor_id": "0xcabc",
            "chip_models": [
                {
                    "config_key": "cambricon-mlu370",
                    "model_name": "MLU370",
                    "device_id": "0x0370",
                    "ext_sandboxes": {
                        "devices": ["/dev/mlu0", "/dev/mlu1", "/dev/mlu_ctl"],
                        "vllm": {"device_env": "MLU_VISIBLE_DEVICES", "shm_size_gb": 8},
                    },
                }
            ],
        }
    )
    config = builders.devices_config(data)
    sb = select_sandbox(config, "cambricon-mlu370", "vllm")
    assert isinstance(sb, ConfigSandbox)
    assert [n.host for n in sb.device_nodes([1])] == ["/dev/mlu1", "/dev/mlu_ctl"]


def test_custom_registry_is_consulted_after_config(seed_config: DevicesConfig) -> None:
    registry = SandboxRegistry()
    registry.register(CambriconMluSandbox(chip_key="ascend-910b", engine="vllm"))
    registry.register(CambriconMluSandbox(chip_key="ascend-310p", engine="mindie"))
    # config has ascend-910b/vllm: config wins; ascend-310p/mindie: only code has it.
    assert isinstance(select_sandbox(seed_config, "ascend-910b", "vllm", registry), ConfigSandbox)
    assert isinstance(select_sandbox(seed_config, "ascend-310p", "mindie", registry), CambriconMluSandbox)
