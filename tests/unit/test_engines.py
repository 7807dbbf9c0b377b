"""Engine command builders: defaults, and user args replacing defaults without duplicates."""

from __future__ import annotations

import pytest

from xw_operator.engines import (
    EngineCommand,
    EngineContext,
    EngineDefinition,
    build_command,
    flag_name,
    merge_flags,
    parse_engines,
    register_engine,
)
from xw_operator.errors import ConfigError, ResolveError


def ctx(*args: str, revision: str | None = None) -> EngineContext:
    return EngineContext("Qwen/Qwen3-8B", "/mnt/model", revision, 4, tuple(args))


def test_vllm_default_command() -> None:
    cmd = build_command("vllm", ctx())
    assert cmd.command == ("vllm", "serve", "/mnt/model")
    assert cmd.args == (
        "--served-model-name", "Qwen/Qwen3-8B", "--port", "8000", "--tensor-parallel-size", "4",
    )  # fmt: skip


def test_user_flag_replaces_default_in_either_spelling() -> None:
    assert build_command("vllm", ctx("--tensor-parallel-size=2")).args.count("4") == 0
    args = build_command("vllm", ctx("-tp", "2", "--max_model_len", "4096")).args
    assert "--tensor-parallel-size" not in args
    assert args[-4:] == ("-tp", "2", "--max_model_len", "4096")


def test_user_args_appended_after_defaults() -> None:
    args = build_command("vllm", ctx("--max-model-len=8192", "--enforce-eager")).args
    assert args[-2:] == ("--max-model-len=8192", "--enforce-eager")
    assert args.count("--served-model-name") == 1


def test_user_port_replaces_default_port_and_value() -> None:
    args = build_command("vllm", ctx("--port", "9000")).args
    assert args.count("--port") == 1 and "8000" not in args


def test_revision_is_passed() -> None:
    assert build_command("vllm", ctx(revision="v2")).args[-2:] == ("--revision", "v2")


def test_negative_number_is_a_value_not_a_flag() -> None:
    assert flag_name("-1") is None
    assert merge_flags(["--seed", "1"], ["--temperature", "-1"]) == ("--seed", "1", "--temperature", "-1")


def test_mindie_uses_image_entrypoint_and_env() -> None:
    cmd = build_command("mindie", ctx())
    assert cmd.command is None
    assert cmd.env == {
        "MODEL_PATH": "/mnt/model",
        "MODEL_NAME": "Qwen/Qwen3-8B",
        "SERVER_PORT": "8000",
        "WORLD_SIZE": "4",
        "TENSOR_PARALLEL": "4",
    }


def test_env_driven_engines_pass_user_args_to_the_entrypoint() -> None:
    cmd = build_command("mlguider", ctx("--foo", "bar"))
    assert cmd.command is None and cmd.args == ("--foo", "bar")
    assert cmd.env["ORIGIN_MODEL_PATH"] == "/mnt/model" and cmd.env["MODEL_PATH"] == "/mnt/work"


def test_unknown_engine_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(ResolveError, match=r"engine 'sglang' has no definition.*known engines: mindie, mlguider"):
        build_command("sglang", ctx())


def test_code_engine_is_used_when_no_definition_serves_the_engine() -> None:
    register_engine("custom-x", lambda c: EngineCommand(("serve",), (c.served_model_name,)))
    assert build_command("custom-x", ctx()).args == ("Qwen/Qwen3-8B",)


def test_configured_definition_beats_the_shipped_one() -> None:
    mine = EngineDefinition.model_validate({"command": ["my-vllm"], "args": [["--model", "{model_path}"]]})
    cmd = build_command("vllm", ctx(), {"vllm": mine})
    assert cmd.command == ("my-vllm",) and cmd.args == ("--model", "/mnt/model")


def test_image_pattern_selects_the_env_driven_vllm_definition() -> None:
    xw = EngineContext("q", "/mnt/model", None, 2, (), image="harbor.tsingmao.com/xw-cli/vllm-ascend:v1")
    cmd = build_command("vllm", xw)
    assert cmd.definition == "vllm-xw" and cmd.command is None
    assert cmd.env == {"MODEL_PATH": "/mnt/model", "MODEL_NAME": "q", "TENSOR_PARALLEL": "2", "WORLD_SIZE": "2"}


def test_tuned_params_become_flags_or_variables_as_the_definition_says() -> None:
    tuned = (("gpu_memory_utilization", "0.9"), ("extra_args", "--a 'b c'"), ("vllm_use_v1", "0"), ("world_size", "4"))
    upstream = build_command("vllm", EngineContext("q", "/m", None, 4, ("--gpu-memory-utilization=0.5",), tuned))
    assert upstream.args[-3:] == ("--a", "b c", "--gpu-memory-utilization=0.5")
    assert "--gpu-memory-utilization=0.9" not in upstream.args  # the user's flag replaced the recipe's
    assert upstream.env == {"VLLM_USE_V1": "0"}
    xw = build_command(
        "vllm",
        EngineContext(
            "q", "/m", None, 4, ("--max-model-len", "4096"), tuned, ("VLLM_USE_V1",), image="x/xw-cli/vllm:1"
        ),
    )
    assert xw.env["GPU_MEMORY_UTILIZATION"] == "0.9" and xw.env["EXTRA_ARGS"] == "--a 'b c'"
    assert "VLLM_USE_V1" not in xw.env  # the sandbox sets it; a tuned variable never replaces the sandbox's
    assert xw.env["MAX_MODEL_LEN"] == "4096" and xw.args == ()  # an overridable placeholder, not an argument


def test_bad_definition_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"engines.vllm.ready_path"):
        parse_engines("engines: {vllm: {ready_path: health}}", "engines.yaml")


def test_split_arguments_get_the_model_path_without_a_shell() -> None:
    tuned = (("extra_args", "--chat-template $MODEL_PATH/chat_template.jinja --x ${MODEL_PATH}/y"),)
    cmd = build_command("vllm", EngineContext("q", "/mnt/model", None, 1, (), tuned))
    assert cmd.args[-4:] == ("--chat-template", "/mnt/model/chat_template.jinja", "--x", "/mnt/model/y")
