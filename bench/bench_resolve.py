"""How expensive is resolve().bind() + render compared with merely validating the ModelInstance?

The operator resolves every instance on each reconcile and on every devices.yaml reload, so resolve
must stay a small multiple of parsing. Prints ratios against a baseline measured in the same run.
"""

from __future__ import annotations

import json
import timeit

from xw_operator.devices import load_devices_config, packaged_devices_config_path
from xw_operator.instance import parse_instance
from xw_operator.plan import resolve
from xw_operator.render_docker import render_docker

DOC = {
    "apiVersion": "xw.dev/v1alpha1",
    "kind": "ModelInstance",
    "metadata": {"name": "bench"},
    "spec": {
        "model": {"source": {"huggingFace": {"repo": "org/m"}}},
        "engine": {"name": "vllm", "args": ["--max-model-len=8192"]},
        "devices": {"chip": "ascend-910c", "count": 8},
    },
}


def main() -> None:
    config = load_devices_config(packaged_devices_config_path())
    instance = parse_instance(DOC)
    number = 300
    baseline = min(timeit.repeat(lambda: parse_instance(DOC), number=number, repeat=5))
    cases = {
        "resolve (910C x8, topology search)": lambda: resolve(instance, config).bind(),
        "resolve + render_docker + json": lambda: json.dumps(
            render_docker(resolve(instance, config).bind(), server_name="b", host_port=8000)
        ),
        "load devices.yaml": lambda: load_devices_config(packaged_devices_config_path()),
    }
    print(f"baseline: parse_instance {baseline / number * 1e6:.1f} us/op")
    for name, func in cases.items():
        took = min(timeit.repeat(func, number=number, repeat=5))
        print(f"{name}: {took / number * 1e6:.1f} us/op, ratio {took / baseline:.2f}x baseline")


if __name__ == "__main__":
    main()
