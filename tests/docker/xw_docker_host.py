"""Shared pieces of the Docker-mode tests: a simulated accelerator host driving the real `xw` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import builders
import docker

REPO = Path(__file__).resolve().parents[2]
XW = str(Path(sys.executable).with_name("xw"))
OK_IMAGE = "xw-test/engine:ok"
UNHEALTHY_IMAGE = "xw-test/engine:unhealthy"
EXITS_IMAGE = "xw-test/engine:exits"
CONTRACT_IMAGE = "xw-test/engine:contract"  # serves back its argv and env (GET /xw-test/argv, /xw-test/env)

NPU = "test-npu"  # 8 chips, one per PCI function, two boxes of 4 (like Ascend 910B)
DUO = "test-duo"  # 2 chips per PCI function (like Ascend 310P duo cards)


@dataclass
class XwHost:
    """One simulated accelerator host: its own state dir, devices, sysfs and devices.yaml."""

    root: Path
    client: docker.DockerClient
    server_name: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def dev(self) -> Path:
        return self.root / "dev"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def xw(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([XW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([XW, *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def manifest(
        self,
        name: str,
        *,
        chip: str = NPU,
        count: int = 1,
        image: str | None = OK_IMAGE,
        indices: list[int] | None = None,
        port: int | None = None,
        served: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Path:
        """Write a ModelInstance YAML (the same format Kubernetes users apply) and return its path."""
        model_dir = self.models / name
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "config.json").write_text("{}")
        engine: dict[str, Any] = {"name": "vllm"}
        if image:
            engine["image"] = image
        if env:
            engine["env"] = [{"name": k, "value": v} for k, v in env.items()]
        extra: dict[str, Any] = {"port": port} if port is not None else {}
        doc = builders.instance_doc(
            chip,
            count,
            name=name,
            source={"hostPath": str(model_dir)},
            engine=engine,
            model_name=served,
            indices=indices,
            **extra,
        )
        return builders.write_yaml(self.root / f"{name}.yaml", doc)

    def containers(self) -> list[Any]:
        return list(self.client.containers.list(all=True, filters={"label": f"xw.server_name={self.server_name}"}))

    def container(self, instance: str) -> Any:
        return self.client.containers.get(f"{instance}-{self.server_name}")

    def ps(self) -> dict[str, dict[str, Any]]:
        result = self.xw("ps", "-o", "json")
        assert result.returncode == 0, result.stderr
        return {row["name"]: row for row in json.loads(result.stdout)}

    def devices(self) -> list[dict[str, Any]]:
        result = self.xw("devices", "-o", "json")
        assert result.returncode == 0, result.stderr
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        return rows

    def cleanup(self) -> None:
        for container in self.containers():
            container.remove(force=True)


def mknod(path: Path, major: int = 1, minor: int = 3) -> None:
    os.mknod(path, 0o666 | 0o020000, os.makedev(major, minor))  # S_IFCHR


def pci_function(sysfs: Path, address: str, vendor: str, device: str, subsystem: str) -> None:
    d = sysfs / "bus" / "pci" / "devices" / address
    d.mkdir(parents=True)
    (d / "vendor").write_text(vendor + "\n")
    (d / "device").write_text(device + "\n")
    (d / "subsystem_device").write_text(subsystem + "\n")


def devices_yaml(root: Path, *, npu_runtime: str = "runc", extra_npu_device: str | None = None) -> dict[str, Any]:
    dev = root / "dev"
    npu_devices = [str(dev / f"davinci{i}") for i in range(8)]
    npu_devices += [str(dev / n) for n in ("davinci_manager", "devmm_svm", "hisi_hdc")]
    if extra_npu_device:
        npu_devices.append(extra_npu_device)
    images = {"vllm": {"amd64": OK_IMAGE, "arm64": OK_IMAGE}}
    return {
        "version": "1.0",
        # The tests' stand-in images (ok, unhealthy, exits, a missing tag) are named in spec.engine.image.
        "policy": {"allowed_image_prefixes": ["docker.io/xw-test"]},
        "vendors": [
            {
                "vendor_name": "TestVendor",
                "vendor_id": "0x19e5",
                "chip_models": [
                    {
                        "config_key": NPU,
                        "model_name": "Test NPU",
                        "device_id": "0xd802",
                        "variants": [
                            {"subsystem_device_id": "0x3001", "variant_key": "test-npu-b1", "variant_name": "B1"}
                        ],
                        "topology": {"boxes": [{"devices": [0, 1, 2, 3]}, {"devices": [4, 5, 6, 7]}]},
                        "runtime_images": images,
                        "ext_sandboxes": {
                            "devices": npu_devices,
                            "volumes": [f"{root / 'driver'}:/usr/local/driver:ro", f"{root / 'cache'}:/root/.cache"],
                            "runtime": npu_runtime,
                            "vllm": {
                                "device_env": "ASCEND_RT_VISIBLE_DEVICES",
                                "environment": {"ASCEND_GLOBAL_LOG_LEVEL": 3},
                                "privileged": False,
                                "shm_size_gb": 0.25,
                                "capabilities": ["SYS_RAWIO", "CAP_IPC_LOCK"],
                            },
                        },
                    },
                    {
                        "config_key": DUO,
                        "model_name": "Test Duo",
                        "device_id": "0xd500",
                        "chips_per_device": 2,
                        "topology": {"boxes": [{"devices": [0, 1]}, {"devices": [2, 3]}]},
                        "runtime_images": images,
                        "ext_sandboxes": {
                            "devices": [str(dev / f"duo{i}") for i in range(4)] + [str(dev / "davinci_manager")],
                            "vllm": {"device_env": "DEVICES", "shm_size_gb": 0.125},
                        },
                    },
                ],
            }
        ],
    }


def write_devices_yaml(root: Path, **kwargs: Any) -> Path:
    path = root / "devices.yaml"
    path.write_text(builders.devices_text(devices_yaml(root, **kwargs)))
    return path
