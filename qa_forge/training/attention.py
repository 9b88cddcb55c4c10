"""`sdpa_varlen`: attention over packed rows that computes only each segment's own causal block.

With packed rows, transformers' `sdpa` and `eager` paths build a dense block-diagonal mask from the
restarting position ids and compute all N² scores of a row (the mask only zeroes them), and a
dense mask also turns off sdpa's causal fast path. On a GPU the flash-attention varlen kernels
skip the off-diagonal blocks; on CPU there is no such kernel, so this path does what they do
with a loop: split each row at its position-id restarts and run `scaled_dot_product_attention`
with `is_causal=True` on each segment (cost Σ len², causal half). Segments come from position ids
exactly as `qa_forge.training.collate` writes them, or from its explicit `cu_seq_lens_q` when the
batch is flattened; padding (a run of one-token segments) costs a copy. Without either it refuses
the row: a packed row read as one sequence would let every conversation see the ones before it.

Training and scoring only (the full sequence in one forward, `use_cache=False`): it ignores any
attention mask and refuses a key/value cache. Register it once, then load the model with
`attn_implementation="sdpa_varlen"`:

    from qa_forge.training.attention import register
    register()
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

NAME = "sdpa_varlen"


def segment_starts(position_ids: torch.Tensor) -> list[list[int]]:
    """Per row, where segments start (position id 0, or any break in +1 steps) and the row length."""
    n = position_ids.shape[-1]
    breaks = torch.ones_like(position_ids, dtype=torch.bool)
    breaks[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    return [torch.nonzero(row).flatten().tolist() + [n] for row in breaks]


def row_segments(batch: int, position_ids: torch.Tensor | None, cu_seq_lens: torch.Tensor | None) -> list[list[int]]:
    """Per row, its segment starts and length: from explicit `cu_seq_lens` (a flattened batch of
    one row), else from the position ids; neither is an error, never one long sequence."""
    if cu_seq_lens is not None:
        if batch != 1:
            raise ValueError(f"{NAME}: cu_seq_lens describe one flattened row, got a batch of {batch}")
        return [cu_seq_lens.tolist()]
    if position_ids is None:
        raise ValueError(f"{NAME} needs position_ids (or cu_seq_lens_q) to find the packed segments; got neither")
    if position_ids.shape[0] != batch:
        position_ids = position_ids.expand(batch, -1)
    return segment_starts(position_ids)


def spans(starts: list[int]) -> list[tuple[int, int, bool]]:
    """(start, end, singles): segments, with consecutive one-token segments (padding) merged into
    one span flagged `singles` — each of its tokens attends only to itself."""
    out: list[tuple[int, int, bool]] = []
    for s, e in itertools.pairwise(starts):
        single = e - s == 1
        if single and out and out[-1][2] and out[-1][1] == s:
            out[-1] = (out[-1][0], e, True)
        else:
            out.append((s, e, single))
    return out


def sdpa_varlen_forward(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, position_ids=None, **kwargs):
    """query (B, H, N, D), key/value (B, Hkv, N, D) -> (B, N, H, D), as transformers' attention functions."""
    if key.shape[2] != query.shape[2]:
        raise ValueError(
            f"{NAME} is for training / scoring whole sequences (use_cache=False); got {query.shape[2]} queries over {key.shape[2]} keys"
        )
    batch, heads = query.shape[:2]
    dropout = dropout if module.training else 0.0
    groups = heads // key.shape[1]
    rows = []
    for b, starts in enumerate(row_segments(batch, position_ids, kwargs.get("cu_seq_lens_q"))):
        parts = []
        for s, e, singles in spans(starts):
            q, k, v = query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e]
            if singles:  # softmax over one key is 1: the output is the value (dropout aside)
                parts.append(v.repeat_interleave(groups, dim=1))
            else:
                parts.append(F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=True))
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs):
    return None  # segments come from position ids; no dense mask is built


def register() -> str:
    """Register `sdpa_varlen` with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, sdpa_varlen_forward)
    AttentionMaskInterface.register(NAME, _no_mask)
    return NAME
