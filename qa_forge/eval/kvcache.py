"""KV-cache layouts for `TransformersEngine`'s reused batch: a DynamicCache layer that appends in place,
rows for conversations that join, and compaction of the columns no conversation holds.

Measured on SmolLM2-135M, batch 8, 2 CPU cores (the cpu-real evaluation): with 1,000 cached tokens,
DynamicLayer.update's torch.cat (it copies the whole cache at every decoded token) was 41 % of a
decode step; and a reused batch's width had grown to 2,414 columns while its longest conversation held
908 tokens (masked holes: padding, tokens cut from a reply, rows that joined). transformers has no
layer that grows in place (StaticCache needs its length up front and one length for every row) and no
way to add a row or drop masked columns, hence these.

Only caches whose every layer is a plain full-attention DynamicLayer are changed; any other layout
(sliding windows, linear attention) is left to the caller, which then re-encodes.
"""

from __future__ import annotations

from functools import cache

ALIGN = 256  # buffer columns are allocated in multiples of this


@cache
def _layer_classes():
    """(DynamicLayer, GrowingLayer), built on first use (importing transformers is slow)."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A DynamicLayer whose keys and values are views of buffers with spare columns: `update` writes
        the new columns in place, reallocating (1.5x) only when the buffer is full. Any method that
        rebinds `keys` (batch_select_indices, crop, compaction, added rows) is noticed at the next
        update, which copies the rebound tensors into a new buffer."""

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n, new = self.get_seq_length(), key_states.shape[-2]
            if not self._owns_views() or self._k.shape[-2] < n + new or self._k.shape[0] != key_states.shape[0]:
                self._reallocate(key_states, value_states, n, n + new)
            self._k[..., n : n + new, :] = key_states
            self._v[..., n : n + new, :] = value_states
            self.keys, self.values = self._k[..., : n + new, :], self._v[..., : n + new, :]
            self._views = (self.keys, self.values)
            return self.keys, self.values

        def _owns_views(self) -> bool:
            views = getattr(self, "_views", None)
            return views is not None and views[0] is self.keys and views[1] is self.values

        def _reallocate(self, key_states, value_states, n: int, need: int) -> None:
            columns = -(-int(need * 1.5) // ALIGN) * ALIGN
            b, h, _, d = key_states.shape
            self._k = key_states.new_empty((b, h, columns, d))
            self._v = value_states.new_empty((b, value_states.shape[1], columns, value_states.shape[-1]))
            if n:
                self._k[..., :n, :] = self.keys
                self._v[..., :n, :] = self.values

    return DynamicLayer, GrowingLayer


def _plain_layers(cache_obj) -> list | None:
    """The cache's layers when every one is a full-attention DynamicLayer (or ours), else None."""
    dynamic, growing = _layer_classes()
    layers = getattr(cache_obj, "layers", None)
    if not layers or any(type(layer) not in (dynamic, growing) for layer in layers):
        return None
    return layers


def growing_cache(model):
    """An empty DynamicCache for `model` whose layers append in place (GrowingLayer); None when the
    model's layout is not all full-attention layers (then `generate` builds its own cache)."""
    from transformers.cache_utils import DynamicCache

    cache_obj = DynamicCache(config=model.config)
    if _plain_layers(cache_obj) is None:
        return None
    _, growing = _layer_classes()
    cache_obj.layers = [growing() for _ in cache_obj.layers]
    return cache_obj


def add_empty_rows(cache_obj, n: int) -> bool:
    """Append `n` all-zero rows to every layer, for conversations that join a running batch (their
    columns are masked out). False (cache untouched) for another layout or an uninitialized layer: the
    caller re-encodes. transformers has batch_select_indices and batch_repeat_interleave, but nothing
    that adds a row."""
    import torch

    layers = _plain_layers(cache_obj)
    if layers is None or not all(layer.is_initialized for layer in layers):
        return False
    for layer in layers:
        layer.keys = torch.cat([layer.keys, layer.keys.new_zeros((n, *layer.keys.shape[1:]))])
        layer.values = torch.cat([layer.values, layer.values.new_zeros((n, *layer.values.shape[1:]))])
    return True


def compact(ids, mask, cache_obj, slack: float = 0.25):
    """Drop cache columns that no row holds: each row's held columns (mask 1) move right, in order, into
    a cache as wide as the row holding most; (ids, mask) keep their uncached tail (the last generated
    token) after them. Positions do not change: `generate` numbers a token by the mask's cumulative sum
    and the rotary embedding is already in the cached keys. Returns (ids, mask) and compacts the cache in
    place, or returns them untouched when under `slack` of the columns would go or the layout is another."""
    import torch

    layers = _plain_layers(cache_obj)
    cached = cache_obj.get_seq_length() if layers is not None else 0
    if layers is None or cached == 0:
        return ids, mask
    held = mask[:, :cached].sum(1)
    width = int(held.max())
    if cached - width <= slack * cached:
        return ids, mask
    # per row: the indices of its held columns, right-aligned; the padding points at column 0 (masked)
    order = torch.sort(mask[:, :cached], dim=1, stable=True).indices  # unheld first, then held, in order
    take = order[:, cached - width :]
    rows = torch.arange(ids.shape[0])[:, None]
    for layer in layers:
        layer.keys = layer.keys.transpose(1, 2)[rows, take].transpose(1, 2).contiguous()
        layer.values = layer.values.transpose(1, 2)[rows, take].transpose(1, 2).contiguous()
    new_mask = mask[:, :cached].gather(1, take)
    new_ids = ids[:, :cached].gather(1, take)
    return torch.cat([new_ids, ids[:, cached:]], 1), torch.cat([new_mask, mask[:, cached:]], 1)


def prefill_rows(model, ids, mask, cache_obj, suffix_lengths) -> bool:
    """Encode into the cache, before `generate`, every new column but the last for the rows that have
    more than one new token, the other rows not run: in one forward of the whole batch a row continuing
    its reply (one new token) would be padded to the longest tool result. The others get masked zero
    columns there; `generate` then feeds each row its last new token. Nothing is done (False) when every
    row or no row has such tokens (no saving) or the layout is another."""
    import torch
    from transformers.cache_utils import DynamicCache

    layers = _plain_layers(cache_obj)
    if layers is None or not all(layer.is_initialized for layer in layers):
        return False
    cached = cache_obj.get_seq_length()
    rows = [j for j, n in enumerate(suffix_lengths) if n > 1]
    if not rows or len(rows) == ids.shape[0] or ids.shape[1] - cached < 3:
        return False
    pick = torch.tensor(rows)
    _, growing = _layer_classes()
    sub = DynamicCache()
    sub.layers = []
    for layer in layers:
        part = growing()
        part.lazy_initialization(layer.keys, layer.values)
        part.keys, part.values = layer.keys[pick], layer.values[pick]
        sub.layers.append(part)
    sub_mask = mask[pick, :-1]
    positions = (sub_mask.cumsum(-1) - 1).clamp(min=0)[:, cached:]
    with torch.no_grad():
        model(
            input_ids=ids[pick, cached:-1],
            attention_mask=sub_mask,
            position_ids=positions,
            past_key_values=sub,
            use_cache=True,
            logits_to_keep=1,
        )
    for layer, part in zip(layers, sub.layers):
        for name in ("keys", "values"):
            old, new = getattr(layer, name), getattr(part, name)
            grown = old.new_zeros((old.shape[0], old.shape[1], new.shape[2], old.shape[3]))
            grown[:, :, :cached] = old
            grown[pick, :, cached:] = new[:, :, cached:]
            setattr(layer, name, grown)
    return True
