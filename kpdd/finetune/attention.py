"""Attention for packed rows on a CPU: each packed sequence on SDPA's fused causal kernel, no mask.

Packing (padding-free: a pass's sequences laid end to end in one row, position ids restarting at each) spends no
compute on padding, but transformers' ``sdpa`` attention keeps the sequences apart with a block-diagonal mask, and a
mask sends CPU SDPA to its math path. ``sdpa_packed`` runs SDPA's causal kernel on each sequence's slice of the row
instead (the boundaries come from the collator's ``cu_seq_lens_q``, or from the position ids), so a token attends to
the earlier tokens of its own sequence only, exactly as with the mask. Its mask function is flash attention's, which
passes no mask unless a row has padding.

For training: a row the collator did not pack is taken as one causal sequence; a padding mask is refused (a left-padded
row, as generation pads, would attend to its pads).
"""

from __future__ import annotations

SDPA_PACKED = "sdpa_packed"


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

    def sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout if module.training else 0.0,
                                              is_causal=causal, scale=scaling, enable_gqa=grouped)

    if len(bounds) == 2:
        out = sdpa(query, key, value)
    else:
        sizes = [end - start for start, end in zip(bounds, bounds[1:])]
        out = torch.cat([sdpa(q, k, v) for q, k, v in zip(query.split(sizes, 2), key.split(sizes, 2),
                                                           value.split(sizes, 2))], dim=2)
    return out.transpose(1, 2).contiguous(), None


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
