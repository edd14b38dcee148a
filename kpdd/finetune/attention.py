"""Attention for packed rows on a CPU: each packed sequence causal on its own, no mask.

Packing (padding-free: a pass's sequences laid end to end in one row, position ids restarting at each) spends no
compute on padding, but transformers' ``sdpa`` attention keeps the sequences apart with a block-diagonal mask, and a
mask sends CPU SDPA to its math path. ``sdpa_packed`` attends within each sequence's slice of the row instead (the
boundaries come from the collator's ``cu_seq_lens_q``, or from the position ids), so a token attends to the earlier
tokens of its own sequence only, exactly as with the mask. Its mask function is flash attention's, which passes no
mask unless a row has padding.

In bf16, a sequence of up to :data:`MATMUL_MAX_LENGTH` tokens goes through two batched matmuls with the causal mask
added by the first and a softmax between them (:func:`causal_matmul_attention`): on a 2-core AVX512-BF16 CPU,
forward and backward of 9 heads (3 key-value heads) of 64 take 0.77 against SDPA's fused CPU kernel's 1.90 ms at
120 tokens, 1.99 against 4.60 at 250, 27.7 against 39.0 at 1,000 (``benchmarks/bench_attention.py``). It keeps the
attention weights for the backward pass (2 bytes a head and pair of positions: 19 MB a layer at 1,024 tokens), so
longer sequences take SDPA's kernel, which keeps none; so does fp32, where that kernel is as fast (4.59 against
4.38 ms at 250 tokens, faster from 400).

For training: a row the collator did not pack is taken as one causal sequence; a padding mask is refused (a left-padded
row, as generation pads, would attend to its pads).
"""

from __future__ import annotations

import functools

SDPA_PACKED = "sdpa_packed"
MATMUL_MAX_LENGTH = 1024  # longer bf16 sequences take SDPA's kernel (the weights would take 19 MB a layer and more)


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                          cu_seq_lens_q=None, position_ids=None, **kwargs):
    """transformers' attention interface: query (rows, heads, length, head dim), key and value (rows, kv heads,
    length, head dim) → (rows, length, heads, head dim)."""
    import torch
    import torch.nn.functional as F

    if attention_mask is not None:
        raise ValueError(f"{SDPA_PACKED} attention takes packed or unpadded rows without an attention mask; load the "
                         "model with attn_implementation='sdpa' to pass padded rows")
    length = query.shape[2]
    bounds = sequence_bounds(cu_seq_lens_q, position_ids, length) if query.shape[0] == 1 else [0, length]
    grouped = module.num_key_value_groups > 1
    causal = length > 1 and getattr(module, "is_causal", True)
    dropout = dropout if module.training else 0.0

    def attend(q, k, v):
        if causal and not dropout and q.dtype != torch.float32 and q.shape[2] == k.shape[2] <= MATMUL_MAX_LENGTH:
            return causal_matmul_attention(q, k, v, scaling)
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal, scale=scaling,
                                              enable_gqa=grouped)

    if len(bounds) == 2:
        out = attend(query, key, value)
    else:
        sizes = [end - start for start, end in zip(bounds, bounds[1:])]
        out = torch.cat([attend(q, k, v) for q, k, v in zip(query.split(sizes, 2), key.split(sizes, 2),
                                                           value.split(sizes, 2))], dim=2)
    return out.transpose(1, 2).contiguous(), None


def causal_matmul_attention(query, key, value, scaling=None):
    """Causal attention as two batched matmuls: query (rows, heads, length, head dim), key and value (rows, kv heads,
    length, head dim) → (rows, heads, length, head dim). Each key-value head's query heads are stacked along the
    length (heads ``kv * groups ... kv * groups + groups - 1`` share key-value head ``kv``, as in transformers'
    ``repeat_kv``), so keys and values are not repeated; the mask comes in as the first matmul's added term. The
    softmax runs in the inputs' number format (in bf16 its sums are fp32), as the weights are kept for the
    backward pass in it either way."""
    import torch

    rows, heads, length, head_dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    stacked = query.reshape(rows * kv_heads, groups * length, head_dim)
    keys = key.reshape(rows * kv_heads, length, head_dim).transpose(1, 2)
    scores = torch.baddbmm(causal_bias(length, groups, query.dtype), stacked, keys,
                           alpha=head_dim**-0.5 if scaling is None else scaling)
    out = scores.softmax(-1) @ value.reshape(rows * kv_heads, length, head_dim)
    return out.view(rows, heads, length, head_dim)


@functools.lru_cache(maxsize=32)  # a pass's sequences come back in every layer; 32 of 1,024 tokens: 200 MB
def causal_bias(length: int, groups: int, dtype) -> object:
    """0 where a position may attend (itself and earlier ones), -inf after, for ``groups`` stacked query heads:
    (groups * length, length)."""
    import torch

    return torch.full((length, length), float("-inf"), dtype=dtype).triu(1).repeat(groups, 1)


def sequence_bounds(cu_seq_lens, position_ids, length: int) -> list[int]:
    """Where each packed sequence of a row starts, and the row's end: from the collator's cumulative lengths, else
    from the positions that restart at 0; one sequence when neither is given."""
    if cu_seq_lens is not None:
        return [int(b) for b in cu_seq_lens.tolist()]
    if position_ids is None:
        return [0, length]
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()
    return ([0] if not starts or starts[0] != 0 else []) + starts + [length]


def register() -> str:
    """Make ``sdpa_packed`` an attention implementation transformers models can be loaded with; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

    AttentionInterface.register(SDPA_PACKED, packed_sdpa_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(SDPA_PACKED, flash_attention_mask)
    return SDPA_PACKED
