"""bench/gpu_check.py runs here at tiny sizes (--cpu-smoke): every part ends ok with its numbers,
the packing parity holds on CPU (sdpa, sdpa_varlen), and it runs without pydantic or dvc, as it
must on the GPU host, which has only torch, transformers, peft and accelerate. Proves the script
works; measures no GPU."""

import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "bench/gpu_check.py"
# the repo modules the script may load: torch-only, importable on the GPU host
TORCH_ONLY = {
    "qa_forge",
    "qa_forge.core",
    "qa_forge.core.segments",
    "qa_forge.training",
    "qa_forge.training.collate",
    "qa_forge.training.attention",
}


def gpu_host_env(tmp_path) -> dict:
    """A clean environment in which pydantic and dvc cannot be imported: packages of those names,
    first on the path, raise ImportError, as their absence would on the GPU host."""
    for name in ("pydantic", "dvc"):
        (tmp_path / "absent" / name).mkdir(parents=True)
        (tmp_path / "absent" / name / "__init__.py").write_text(f"raise ImportError('{name} is not installed on the GPU host')\n")
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return keep | {"PYTHONPATH": str(tmp_path / "absent"), "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    out = tmp / "smoke.json"
    cmd = [sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp, env=gpu_host_env(tmp), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_part_ran(smoke):
    assert smoke["mode"] == "cpu-smoke" and smoke["hardware"]["device"] == "cpu"
    assert smoke["hardware"]["torch"] and smoke["hardware"]["transformers"]
    for name in ("packing", "train", "eval"):
        part = smoke["parts"][name]
        assert part["ok"], (name, part.get("error"), part.get("traceback"))
        assert part["seconds"] > 0 and part["ran_on"] == "cpu"


def test_packed_batch_equals_each_conversation_alone(smoke):
    part = smoke["parts"]["packing"]
    impls = part["impls"]
    for impl in ("sdpa", "sdpa_varlen"):
        assert impls[impl]["pass"] and impls[impl]["max_logit_diff"] < 1e-4 and impls[impl]["loss_diff"] < 1e-4, impls[impl]
    assert impls["sdpa"]["layout"].startswith("padded") and impls["sdpa_varlen"]["layout"].startswith("flattened (1,")
    assert impls["sdpa_varlen"]["cu_seq_lens_match_conversations"]
    assert impls["sdpa"]["control_all_ones_mask_logit_diff"] > 1e-2  # the comparison does catch attention across conversations
    assert "skipped" in impls["flash_attention_2"]
    assert "skipped" in impls["flex_attention"] or impls["flex_attention"]["pass"]
    assert part["all_pass"] and part["rows"] >= 2


def test_training_numbers(smoke):
    part = smoke["parts"]["train"]
    assert set(part["configs"]) == {"sdpa", "sdpa + checkpointing", "sdpa_varlen", "sdpa_varlen + checkpointing"}
    for name, c in part["configs"].items():
        assert "error" not in c, (name, c)
        assert c["steps"] >= 1 and c["tokens"] > 0 and c["tokens_per_s"] > 0 and c["model_tflops_per_s"] > 0, (name, c)
        assert math.isfinite(c["loss_last"]) and c["mfu"] == "unknown"  # no GPU peak on CPU
    assert part["params_lora"] > 0 and part["params_frozen_matmul"] > part["params_lora"]
    assert all(n >= 2 for n in part["conversations_per_row"])  # packed rows, several conversations each


def test_evaluate_loop_numbers(smoke):
    part = smoke["parts"]["eval"]
    for mode in part["modes"].values():
        assert mode["questions_done"] == part["questions"] and mode["questions_per_s"] > 0
    assert part["speedup"] > 0
    # greedy, fp32: batching and the kept KV cache change no token
    assert part["identical_final_tokens"] == part["questions_compared"] == part["questions"]


def test_runs_without_pydantic(smoke):
    assert smoke["imports"]["absent_on_gpu_host_but_loaded"] == []
    assert set(smoke["imports"]["qa_forge_modules"]) <= TORCH_ONLY


def test_smoke_never_writes_the_gpu_results(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--cpu-smoke", "--out", str(ROOT / "bench/results/gpu_check.json")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=gpu_host_env(tmp_path), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "never writes" in proc.stderr
