"""fp32 master weights for bf16 training: the bf16 weights follow an fp32 training rounded, updates bf16 alone would
round away are kept, a saved and reloaded optimizer continues exactly, and a CPU training in bf16 uses them."""

import io

import pytest

from kpdd.finetune.master_weights import MASTER_WEIGHTS, keep_fp32_master_weights


def bf16_weight(values):
    import torch

    return torch.nn.Parameter(torch.tensor(values, dtype=torch.bfloat16))


GRADIENTS = [[1.0, -0.5, 0.25, 2.0], [0.5, 0.5, -1.0, 1.0], [-0.25, 1.0, 0.5, -2.0]]


def train(weight, optimizer, steps, start=0):
    import torch

    for k in range(start, start + steps):
        weight.grad = torch.tensor(GRADIENTS[k % len(GRADIENTS)], dtype=weight.dtype)
        optimizer.step()
        optimizer.zero_grad()


def test_bf16_weights_follow_the_fp32_training_rounded_where_bf16_alone_would_not_move():
    import torch

    init = [1.0, 0.5, -2.0, 0.125]  # exact in bf16
    reference = torch.nn.Parameter(torch.tensor(init))
    train(reference, torch.optim.AdamW([reference], lr=1e-4), 60)

    weight = bf16_weight(init)
    optimizer = torch.optim.AdamW([weight], lr=1e-4)
    assert keep_fp32_master_weights(optimizer)
    assert not keep_fp32_master_weights(optimizer)  # a second call finds no bf16 parameter left: a no-op
    train(weight, optimizer, 60)
    assert weight.dtype == torch.bfloat16
    assert torch.equal(weight.detach(), reference.detach().to(torch.bfloat16))
    assert not torch.equal(weight.detach(), torch.tensor(init, dtype=torch.bfloat16))  # it moved

    # Without them each step of 1e-4 rounds away (bf16 holds 8 bits: the spacing at 1.0 is 2^-7).
    plain = bf16_weight(init)
    train(plain, torch.optim.AdamW([plain], lr=1e-4), 60)
    assert torch.equal(plain.detach(), torch.tensor(init, dtype=torch.bfloat16))


def test_a_saved_optimizer_continues_from_the_exact_fp32_values():
    import torch

    init = [1.0, 0.5, -2.0, 0.125]
    straight = bf16_weight(init)
    optimizer = torch.optim.AdamW([straight], lr=3e-3)
    keep_fp32_master_weights(optimizer)
    train(straight, optimizer, 9)

    first = bf16_weight(init)
    optimizer = torch.optim.AdamW([first], lr=3e-3)
    keep_fp32_master_weights(optimizer)
    train(first, optimizer, 4)
    saved = io.BytesIO()
    torch.save(optimizer.state_dict(), saved)  # as the trainer checkpoints it
    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    masters = state[MASTER_WEIGHTS]
    assert masters[0].dtype == torch.float32 and not torch.equal(masters[0], masters[0].to(torch.bfloat16).float())

    resumed = bf16_weight(first.detach().tolist())  # the checkpoint's bf16 weights
    optimizer = torch.optim.AdamW([resumed], lr=3e-3)
    keep_fp32_master_weights(optimizer)
    optimizer.load_state_dict(state)
    train(resumed, optimizer, 5, start=4)
    assert torch.equal(resumed.detach(), straight.detach())


def test_a_state_saved_without_master_weights_starts_them_from_the_loaded_weights():
    import torch

    weight = bf16_weight([1.0, 0.5, -2.0, 0.125])
    fp32_run = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(4))], lr=1e-3)
    optimizer = torch.optim.AdamW([weight], lr=1e-3)
    keep_fp32_master_weights(optimizer)
    with torch.no_grad():
        weight.copy_(torch.tensor([0.25, 0.25, 0.25, 0.25]))  # the checkpoint's weights, loaded after creation
    optimizer.load_state_dict(fp32_run.state_dict())
    train(weight, optimizer, 1)
    assert torch.allclose(weight.detach().float(), torch.full((4,), 0.25), atol=2e-3)  # one step from 0.25, not 1.0


def test_fp32_parameters_are_left_to_the_optimizer_as_they_are():
    import torch

    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=1e-3)
    assert not keep_fp32_master_weights(optimizer)
    assert optimizer.param_groups[0]["params"][0] is weight
    assert MASTER_WEIGHTS not in optimizer.state_dict()


def test_an_optimizer_that_stepped_already_is_refused():
    import torch

    weight = bf16_weight([1.0, 2.0, 3.0, 4.0])
    optimizer = torch.optim.AdamW([weight], lr=1e-3)
    train(weight, optimizer, 1)
    with pytest.raises(ValueError, match="taken steps"):
        keep_fp32_master_weights(optimizer)
    assert optimizer.param_groups[0]["params"][0] is weight  # left as it was


def test_a_bf16_full_fine_tune_on_cpu_trains_bf16_weights_on_fp32_master_weights(tmp_path):
    """A CPU training in bf16 holds bf16 weights; its checkpoints carry the fp32 master weights the bf16 ones are
    rounded from, and a resumed run picks them up."""
    import torch
    from safetensors.torch import load_file

    from kpdd.finetune.trainer import CHECKPOINTS, TrainConfig, train_student
    from tests.finetune.test_trainer import TINY, chat_records

    settings = {**TINY, "lora": False, "precision": "bf16", "save_steps": 1, "device": "cpu", "keep_checkpoints": True}
    records = chat_records(n=8)
    train_student(TrainConfig(max_steps=2, **settings), records, [], tmp_path / "s", progress=False)
    checkpoint = tmp_path / "s" / CHECKPOINTS / "checkpoint-2"
    weights = load_file(checkpoint / "model.safetensors")
    masters = torch.load(checkpoint / "optimizer.pt", weights_only=True)[MASTER_WEIGHTS]
    assert {w.dtype for w in weights.values()} == {torch.bfloat16}
    assert {m.dtype for m in masters} == {torch.float32}
    bits = lambda t: t.view(torch.int16).numpy().tobytes()  # noqa: E731  (numpy has no bf16)
    rounded = {bits(m.to(torch.bfloat16)) for m in masters}
    assert all(bits(w) in rounded for w in weights.values())  # each weight is its master weight, rounded
    assert not torch.all(weights["model.norm.weight"] == 1)  # and the steps moved them (the norms start at ones)
    assert any(not torch.equal(m, m.to(torch.bfloat16).float()) for m in masters)  # finer than bf16

    (tmp_path / "s" / "kpdd.json").unlink(missing_ok=True)
    resumed = train_student(TrainConfig(max_steps=3, **settings), records, [], tmp_path / "s", progress=False)
    assert resumed.steps == 3
