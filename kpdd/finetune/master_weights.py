"""fp32 master weights for a model trained in bf16.

A CPU with native bf16 multiplies bf16 several times faster than fp32, but under autocast every pass first casts
each fp32 weight to bf16 and every bf16 weight gradient back to fp32. With the weights themselves in bf16 neither
copy is made; the optimizer then keeps an fp32 copy of each trainable weight (its master weight), takes its step
on it and rounds the result into the bf16 weight: a learning-rate-sized update is far below bf16's resolution
(8 bits of mantissa) and would be rounded away if applied to the bf16 weight itself.

It works with any ``torch.optim`` optimizer through the optimizer's own hooks (step, state dict), so transformers'
``Trainer`` creates, schedules, clips, checkpoints and resumes it as usual; the master weights travel in the
optimizer's state dict, so a resumed run continues from the exact fp32 values.
"""

from __future__ import annotations

MASTER_WEIGHTS = "fp32_master_weights"  # the key of the master weights in the optimizer's state dict


def keep_fp32_master_weights(optimizer) -> bool:
    """Make ``optimizer`` (no step taken yet) update fp32 copies of its bf16 parameters and round each step's
    result into them. Other parameters (fp32 LoRA adapters, say) are left to it as they are. False if it has no
    bf16 parameter (nothing changed), as on a second call."""
    import torch

    bf16 = [weight for group in optimizer.param_groups for weight in group["params"] if weight.dtype == torch.bfloat16]
    if not bf16:
        return False
    if any(weight in optimizer.state for weight in bf16):
        raise ValueError("fp32 master weights: the optimizer has taken steps on its bf16 parameters already")
    pairs = []  # (bf16 weight the model computes with, fp32 master weight the optimizer updates)
    for group in optimizer.param_groups:
        params = []
        for weight in group["params"]:
            if weight.dtype == torch.bfloat16:
                master = weight.detach().float()
                pairs.append((weight, master))
                weight = master
            params.append(weight)
        group["params"] = params

    def gradients_to_masters(opt, args, kwargs):
        for weight, master in pairs:
            master.grad = None if weight.grad is None else weight.grad.float()

    @torch.no_grad()
    def masters_to_weights(opt, args, kwargs):
        for weight, master in pairs:
            weight.copy_(master)
            master.grad = None

    def save_masters(opt, state_dict):
        state_dict[MASTER_WEIGHTS] = [master for _, master in pairs]
        return state_dict

    @torch.no_grad()
    def load_masters(opt, state_dict):
        state_dict = dict(state_dict)
        masters = state_dict.pop(MASTER_WEIGHTS, None)
        if masters is not None and len(masters) != len(pairs):
            raise ValueError(f"fp32 master weights: the saved optimizer state holds {len(masters)}, this model "
                             f"trains {len(pairs)} bf16 weights")
        for k, (weight, master) in enumerate(pairs):
            # a state saved without them (an fp32 run's): start from the weights the model was loaded with
            master.copy_(masters[k] if masters is not None else weight)
            weight.copy_(master)
        return state_dict

    optimizer.register_step_pre_hook(gradients_to_masters)
    optimizer.register_step_post_hook(masters_to_weights)
    optimizer.register_state_dict_post_hook(save_masters)
    optimizer.register_load_state_dict_pre_hook(load_masters)
    return True
