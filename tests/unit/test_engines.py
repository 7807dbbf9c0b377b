"""Engine command builders: defaults, and user args replacing defaults without duplicates."""

from __future__ import annotations

from xw_operator.engines import EngineContext, build_command, flag_name, merge_flags


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


def test_other_engines_pass_args_to_entrypoint() -> None:
    cmd = build_command("mlguider", ctx("--foo", "bar"))
    assert cmd.command is None and cmd.args == ("--foo", "bar") and cmd.env == {}
