#!/bin/busybox sh
# Stand-in inference engine for xw-operator's Docker-mode tests (FROM scratch + static busybox).
#
# Installed as /entrypoint.sh and as /bin/vllm. Accepts vLLM-style arguments, e.g. `vllm serve /models/x --served-model-name NAME --port 8000 ...`
# (a leading "vllm" / "serve" and anything it does not know are ignored), or the env var XW_TEST_MODEL_NAME.
# Served name precedence: --served-model-name, then XW_TEST_MODEL_NAME, then the model path argument,
# then "stand-in". Behaviour comes from XW_TEST_MODE (baked into each image tag):
#   ok         /health -> 200, /v1/models lists the name
#   unhealthy  /v1/models lists the name, /health -> 404 (never healthy)
#   exits      prints a message and exits 3 after ~1 s
#   contract   as ok (a separate tag the engine-contract tests use)
# Before serving it prints its args, env and visible /dev entries so `docker logs` shows what it got, and
# serves exactly what it received at GET /xw-test/argv (its name then one argument per line) and
# GET /xw-test/env (the environment it started with, one VAR=value per line, sorted) for the
# engine-contract tests. Env-driven images (MindIE, omni-infer, MLGuider, xw-cli's vLLM) are imitated too:
# the served name falls back to MODEL_NAME, the port to SERVER_PORT / API_PORT.
received_env="$(env | sort)"
argv0="$0"
export PATH=/bin
mode="${XW_TEST_MODE:-ok}"
[ "$mode" = contract ] && mode=ok  # the contract tests' own tag, same behaviour
echo "xw-test-engine mode=$mode"
echo "args: $*"
echo "env:"
echo "$received_env" | sed 's/^/  /'
echo "dev: $(ls /dev | tr '\n' ' ')"
mkdir -p /tmp/www/xw-test
echo "$received_env" >/tmp/www/xw-test/env
{ echo "$argv0"; for a in "$@"; do echo "$a"; done; } >/tmp/www/xw-test/argv

name="${XW_TEST_MODEL_NAME:-${MODEL_NAME:-}}"
cli_name=""
model_path=""
port="${SERVER_PORT:-${API_PORT:-8000}}"
while [ "$#" -gt 0 ]; do
  case "$1" in
    --served-model-name) cli_name="$2"; shift 2 ;;
    --served-model-name=*) cli_name="${1#*=}"; shift ;;
    --port) port="$2"; shift 2 ;;
    --port=*) port="${1#*=}"; shift ;;
    vllm|serve|python|python3|-m) shift ;;
    --*=*) shift ;;
    --*) if [ "$#" -gt 1 ] && [ "${2#--}" = "$2" ]; then shift 2; else shift; fi ;;
    *) [ -z "$model_path" ] && model_path="$1"; shift ;;
  esac
done
[ -n "$cli_name" ] && name="$cli_name"
[ -z "$name" ] && name="$model_path"
[ -z "$name" ] && name="stand-in"
echo "served model name: $name (port $port)"

if [ "$mode" = exits ]; then
  sleep 1
  echo "engine failed to start (stand-in mode=exits)" >&2
  exit 3
fi

root=/tmp/www
mkdir -p "$root/v1"
if [ "$mode" = ok ]; then
  : >"$root/health"
fi
# busybox httpd serves /v1/models from the file v1/models (no extension needed).
printf '{"object":"list","data":[{"id":"%s","object":"model","owned_by":"xw-test","root":"%s"}]}\n' \
  "$name" "${model_path:-$name}" >"$root/v1/models"
echo "serving on :$port"
exec busybox httpd -f -v -p "$port" -h "$root"
