#!/usr/bin/env bash
# One-shot check on a machine with an NVIDIA GPU: builds delayconv with the
# python3 found there (a CUDA build of torch, no network), runs the CUDA
# tests, times the GPU step and a training sequence, and prints a short table
# last. Budget: 8 minutes in all (the phases' limits add up to 470 s).
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

# The benchmark package where it exists; else a small timing of its own: the
# median time of one step of a layer with per-weight delays, of the same
# layer without delays (update, then cuDNN), and of cuDNN's conv2d alone;
# then forward_sequence of 16 steps and its backward pass (to the weights
# and the delays) on the delayed layers.
cat >"$work/timing.py" <<'PY'
import statistics

import torch

import delayconv

LAYERS = {  # name: batch, channels, size, filters, kernel, max delay (steps)
    "small": (1, 2, 28, 16, 5, 5),
    "medium": (8, 16, 32, 32, 3, 8),
    "large": (32, 64, 32, 64, 3, 8),
}


def timed(run, repeats=50):
    for _ in range(5):
        run()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def layer(batch, channels, size, filters, kernel, steps, delayed):
    return delayconv.Conv2D(
        size,
        size,
        channels,
        filters,
        1.0,
        kernel,
        padding=kernel // 2,
        batch_size=batch,
        synapse=delayconv.SingleExponentialCurrent.partialconstructor(1.0, 5.0),
        delay=float(steps) if delayed else None,
        delay_init=lambda d: torch.rand_like(d) * steps,
    ).cuda()


if not torch.cuda.is_available():
    raise SystemExit("no GPU visible: nothing to time")

print(f"{'layer':8} {'delayed ms':>11} {'no delay ms':>12} {'conv2d ms':>10}")
with torch.no_grad():
    for name, sizes in LAYERS.items():
        batch, channels, size, _, kernel, _ = sizes
        x = torch.rand(batch, channels, size, size, device="cuda") < 0.2
        delayed = layer(*sizes, delayed=True)
        plain = layer(*sizes, delayed=False)
        dense = x.float()
        fused_ms = timed(lambda: delayed(x))
        plain_ms = timed(lambda: plain(x))
        conv_ms = timed(
            lambda: torch.nn.functional.conv2d(
                dense, plain.weight, padding=kernel // 2
            )
        )
        print(f"{name:8} {fused_ms:11.4f} {plain_ms:12.4f} {conv_ms:10.4f}")

# Training: T steps through forward_sequence, then the backward pass to the
# weights and the delays (float inputs, so the inputs' gradient runs too).
STEPS = 16
print()
print(f"{'layer':8} {'T':>3} {'forward ms':>11} {'fwd+bwd ms':>11}")
for name, sizes in LAYERS.items():
    batch, channels, size = sizes[:3]
    delayed = layer(*sizes, delayed=True)
    delayed.weight.requires_grad_(True)
    delayed.delay.requires_grad_(True)
    shape = (STEPS, batch, channels, size, size)
    x = (torch.rand(shape, device="cuda") < 0.2).float().requires_grad_(True)

    def forward():
        with torch.no_grad():
            delayed.forward_sequence(x)

    def train():
        delayed.forward_sequence(x).sum().backward()

    forward_ms = timed(forward, repeats=10)
    train_ms = timed(train, repeats=10)
    print(f"{name:8} {STEPS:3d} {forward_ms:11.3f} {train_ms:11.3f}")
PY
# Every (case, implementation) pair starts a process of its own, so the
# default keeps to one mode and one synapse model to fit the limit.
default_bench="--mode step --synapse delta --layer nmnist nmnist-d10 hidden hidden-d5
  large-d16 --impl delayconv conv2d conv2d+update conv3d --sweep-layer none
  --repeats 20 --budget 2"
bench_out=()
[ -z "${OUT:-}" ] || bench_out=(--out "$OUT/bench")
if [ -f benchmarks/__main__.py ]; then
  # shellcheck disable=SC2086  # the arguments are a list of words
  phase bench 150 "$python" -m benchmarks --device cuda ${BENCH_ARGS:-$default_bench} \
    "${bench_out[@]}"
else
  phase bench 150 "$python" "$work/timing.py"
fi

echo
echo "=== summary"
printf '%s\n' "${summary[@]}"
echo "tests: ${tests_line:-not run}"
tail -n 14 "$work/bench.log"
exit "$status"
