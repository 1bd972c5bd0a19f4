#!/usr/bin/env bash
# One-shot check on a machine with an NVIDIA GPU: builds delayconv with the
# python3 found there (a CUDA build of torch, no network), runs the CUDA
# tests, times the GPU step with `python -m benchmarks`, and prints a short
# table last. Budget: 8 minutes in all (the phases' limits add up to 470 s).
# The log goes to $OUT/gpu_check.log, and the benchmark's table, JSON and
# plots to $OUT/bench, when OUT is set.
#
#   bash benchmarks/gpu_check.sh
#
# Environment: PYTHON (default python3); MAX_JOBS (default: all cores);
# TORCH_CUDA_ARCH_LIST (default: the visible GPU's architecture);
# BENCH_ARGS, the arguments of `python -m benchmarks` (default: the step of
# the layers the GPU targets name, each against conv2d, conv2d plus the
# synapse update, and the dense conv3d, within the phase's limit).
set -uo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  exec > >(tee "$OUT/gpu_check.log") 2>&1
fi
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export FORCE_CUDA=1
# The checkout's delayconv, wherever a script runs from.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
summary=()
status=0

# Runs a phase under a time limit, keeps its output in $work/<name>.log and
# records its outcome for the table.
phase() {
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit} s): $*"
  local started=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$work/$name.log"
  local rc=${PIPESTATUS[0]}
  local outcome=ok
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    outcome="timed out"
  elif [ "$rc" -ne 0 ]; then
    outcome="failed (exit $rc)"
  fi
  [ "$rc" -eq 0 ] || status=1
  summary+=("$(printf '%-6s %-18s %5d s' "$name" "$outcome" $((SECONDS - started)))")
}

# The environment, for the log.
"$python" - <<'PY'
import torch

print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print(f"GPU: {props.name}, sm_{props.major}{props.minor}")
else:
    print("no GPU visible: the CUDA tests will skip")
PY

# An editable build puts the extension next to the sources, so that the tests
# and benchmarks, run from the checkout, import it. setup.py build_ext is the
# fallback where pip cannot make an editable install offline.
phase build 170 bash -c '"$0" -m pip install --quiet --no-build-isolation \
  --no-deps --no-index -e . || "$0" setup.py build_ext --inplace' "$python"

if "$python" -c "import pytest" 2>/dev/null; then
  # Only the CUDA cases: the CPU ones run in CI.
  phase tests 150 "$python" -m pytest tests/test_cuda.py -m cuda -q -rs \
    -p no:cacheprovider
  tests_line=$(tail -n 1 "$work/tests.log")  # pytest's count of outcomes
else
  echo "pytest is not installed for $python: the tests cannot run"
  summary+=("$(printf '%-6s %-18s %5s' tests 'no pytest' -)")
  status=1
fi

# Every (case, implementation) pair starts a process of its own, so the
# default keeps to one mode and one synapse model to fit the limit.
default_bench="--mode step --synapse delta --layer nmnist nmnist-d10 hidden hidden-d5
  large-d16 --impl delayconv conv2d conv2d+update conv3d --sweep-layer none
  --repeats 20 --budget 2"
bench_out=()
[ -z "${OUT:-}" ] || bench_out=(--out "$OUT/bench")
# shellcheck disable=SC2086  # the arguments are a list of words
phase bench 150 "$python" -m benchmarks --device cuda ${BENCH_ARGS:-$default_bench} \
  "${bench_out[@]}"

echo
echo "=== summary"
printf '%s\n' "${summary[@]}"
echo "tests: ${tests_line:-not run}"
tail -n 14 "$work/bench.log"
exit "$status"
