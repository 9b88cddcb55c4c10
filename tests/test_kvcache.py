"""qa_forge.eval.kvcache on a tiny Llama built from a config: each batched layout (a growing cache, a
compacted one, a prefill split by rows) gives every row the logits that row gets alone, unpadded."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from qa_forge.eval import kvcache


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.3,
    )  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def alone(model, tokens: list[int]):
    """The next-token logits of one unpadded row: the reference."""
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0, -1]


def forward(model, ids, mask, cache):
    """One step the way `generate` takes it: the columns past the cache, positions from the mask."""
    cached = cache.get_seq_length()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, cached:]
    with torch.no_grad():
        return model(input_ids=ids[:, cached:], attention_mask=mask, position_ids=positions, past_key_values=cache).logits[:, -1]


def test_a_growing_cache_gives_the_dynamic_caches_logits_through_appends_and_dropped_rows(model):
    from transformers.cache_utils import DynamicCache

    ids = torch.randint(0, 50, (3, 6))
    logits = {}
    for name, cache in {"dynamic": DynamicCache(), "growing": kvcache.growing_cache(model)}.items():
        assert name == "dynamic" or type(cache.layers[0]).__name__ == "GrowingLayer"
        steps, nxt = [], ids
        with torch.no_grad():
            for i in range(300):  # past the first buffer (1.5 x 6 columns, rounded to 256): it reallocates
                if i == 150:
                    cache.batch_select_indices(torch.tensor([0, 2]))  # a conversation ends
                    nxt = nxt[[0, 2]]
                out = model(nxt, past_key_values=cache)
                steps.append(out.logits[:, -1])
                nxt = out.logits[:, -1:].argmax(-1)
        logits[name] = steps
    assert all(torch.equal(a, b) for a, b in zip(logits["dynamic"], logits["growing"]))


def test_compaction_drops_masked_columns_and_keeps_each_rows_logits(model):
    # three rows with holes (masked columns: padding, a cut reply) in different places
    rows = [[5, 6, 7, 8, 9, 10, 11, 12], [20, 21, 22, 23, 24, 25, 26, 27], [30, 31, 32, 33, 34, 35, 36, 37]]
    mask = torch.tensor([[0, 0, 1, 1, 0, 0, 1, 1], [1, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1, 1]])
    ids = torch.tensor(rows)
    cache = kvcache.growing_cache(model)
    forward(model, ids[:, :-1], mask[:, :-1], cache)  # cache the first 7 columns, as generate leaves them
    next_ids = torch.cat([ids, torch.tensor([[40], [41], [42]])], 1)
    next_mask = torch.cat([mask, torch.ones(3, 1, dtype=mask.dtype)], 1)
    new_ids, new_mask = kvcache.compact(next_ids, next_mask, cache)
    assert cache.get_seq_length() == 3 and new_ids.shape[1] == 5  # 7 cached columns -> the 3 rows 0 and 1 hold
    got = forward(model, new_ids, new_mask, cache)
    for j, row in enumerate(next_ids.tolist()):
        held = [t for t, m in zip(row, next_mask[j].tolist()) if m]
        torch.testing.assert_close(got[j], alone(model, held), atol=1e-5, rtol=1e-5)


def test_prefill_of_long_suffixes_for_their_rows_only_keeps_each_rows_logits(model):
    cache = kvcache.growing_cache(model)
    prompts = [[3, 4, 5, 6], [7, 8, 9, 10], [11, 12, 13, 14]]
    forward(model, torch.tensor(prompts), torch.ones(3, 4, dtype=torch.long), cache)
    # row 1 continues its reply (one new token); rows 0 and 2 get tool results of 5 and 3 tokens
    suffixes = [[15, 16, 17, 18, 19], [20], [21, 22, 23]]
    width = max(map(len, suffixes))
    ids = torch.tensor([p + [0] * (width - len(s)) + s for p, s in zip(prompts, suffixes)])
    mask = torch.tensor([[1] * 4 + [0] * (width - len(s)) + [1] * len(s) for s in suffixes])
    assert kvcache.prefill_rows(model, ids, mask, cache, [len(s) for s in suffixes])
    assert cache.get_seq_length() == ids.shape[1] - 1  # generate feeds the last column only
    got = forward(model, ids, mask, cache)
    for j, (p, s) in enumerate(zip(prompts, suffixes)):
        torch.testing.assert_close(got[j], alone(model, p + s), atol=1e-5, rtol=1e-5)
    # nothing to split when every row (or none) has a long suffix
    assert not kvcache.prefill_rows(model, ids, mask, cache, [5, 3, 2])
