"""CPU batching: right-padded rows without a mask give each row's own loss; the CPU defaults batch rows by length;
a time budget spans resumed runs; the thread count is the caller's."""

import json
from types import SimpleNamespace

import pytest

from kpdd.finetune.trainer import (
    BUDGET_FILE,
    STUDENT_FILE,
    TrainConfig,
    _ReturnFreedMemory,
    _sft_config,
    budget_schedule,
    completion_loss,
    train_student,
)
from kpdd.finetune.hardware import use_torch_threads
from tests.finetune.test_trainer import TINY, chat_records


def tiny_model(tmp_path):
    from transformers import AutoModelForCausalLM

    from tests.tiny_model import save_tiny_llama

    return AutoModelForCausalLM.from_pretrained(save_tiny_llama(tmp_path / "tiny"), attn_implementation="sdpa")


def test_completion_loss_of_right_padded_rows_without_a_mask_equals_each_rows_own_loss(tmp_path):
    import contextlib

    import torch

    model = tiny_model(tmp_path).eval()
    torch.manual_seed(0)
    rows = [torch.randint(5, 1000, (n,)) for n in (7, 12, 4)]
    prompts = [3, 5, 1]  # the first tokens of each row are its prompt: no loss there
    width = 16  # padded past the longest row, as the collator's multiple does
    ids = torch.full((3, width), 2)
    labels = torch.full((3, width), -100)
    for i, (row, prompt) in enumerate(zip(rows, prompts)):
        ids[i, :len(row)], labels[i, prompt:len(row)] = row, row[prompt:]
    with torch.no_grad():
        batched = completion_loss(model, ids, labels, contextlib.nullcontext).item()
        own = [model(input_ids=row[None], labels=torch.cat([torch.full((p,), -100), row[p:]])[None]).loss.item()
               for row, p in zip(rows, prompts)]
    counts = [len(row) - p for row, p in zip(rows, prompts)]  # labelled tokens a row, each predicted from the last
    expected = sum(loss * n for loss, n in zip(own, counts)) / sum(counts)
    assert batched == pytest.approx(expected, rel=1e-4)
    # A mask would change nothing for right-padded rows: the pads come after every real token.
    with torch.no_grad():
        masked = model(input_ids=ids, attention_mask=(labels != -100) | (torch.arange(width) < 8), labels=labels)
    assert masked.loss.item() == pytest.approx(batched, rel=1e-4)


def test_cpu_defaults_pack_rows_two_a_pass_and_unpacked_rows_take_2_passes_of_balanced_cost(tmp_path):
    config = TrainConfig().for_device("cpu")
    assert (config.batch_size, config.grad_accum, config.packing) == (2, 1, True)
    args = _sft_config(config, tmp_path, "cpu", has_val=False)
    assert args.packing and args.pad_to_multiple_of is None and args.train_sampling_strategy == "random"
    unpacked = TrainConfig(packing=False).for_device("cpu")
    assert (unpacked.batch_size, unpacked.grad_accum) == (4, 2)
    args = _sft_config(unpacked, tmp_path, "cpu", has_val=False)
    assert args.train_sampling_strategy == "batch_rebalance" and args.pad_to_multiple_of == 64
    one_pass = _sft_config(TrainConfig(packing=False, batch_size=8, grad_accum=1).for_device("cpu"), tmp_path, "cpu",
                           has_val=False)
    assert one_pass.train_sampling_strategy == "group_by_length"
    gpu = _sft_config(TrainConfig().for_device("cuda"), tmp_path, "cpu", has_val=False)
    assert gpu.packing and gpu.pad_to_multiple_of is None
    assert (gpu.per_device_train_batch_size, gpu.gradient_accumulation_steps) == (8, 1)


def packed(rows, prompts):
    """Sequences laid end to end in one row, as TRL's padding-free collator lays them: ids, labels, positions and
    the sequences' cumulative lengths."""
    import itertools

    import torch

    ids = torch.cat(rows)[None]
    labels = torch.cat([torch.cat([torch.full((p,), -100), row[p:]]) for row, p in zip(rows, prompts)])[None]
    positions = torch.cat([torch.arange(len(row)) for row in rows])[None]
    bounds = torch.tensor([0, *itertools.accumulate(len(row) for row in rows)], dtype=torch.int32)
    return ids, labels, positions, bounds


def test_packed_sequences_attend_only_to_themselves_on_the_packed_attention(tmp_path):
    import contextlib

    import torch
    from transformers import AutoModelForCausalLM

    from kpdd.finetune.attention import register
    from tests.tiny_model import save_tiny_llama

    model = AutoModelForCausalLM.from_pretrained(save_tiny_llama(tmp_path / "tiny"),
                                                 attn_implementation=register()).eval()
    torch.manual_seed(0)
    rows, prompts = [torch.randint(5, 1000, (n,)) for n in (7, 12, 4)], [3, 5, 1]
    ids, labels, positions, bounds = packed(rows, prompts)
    with torch.no_grad():
        own = [model(input_ids=row[None], labels=torch.cat([torch.full((p,), -100), row[p:]])[None]).loss.item()
               for row, p in zip(rows, prompts)]
        from_bounds = completion_loss(model, ids, labels, contextlib.nullcontext, position_ids=positions,
                                      cu_seq_lens_q=bounds).item()
        from_positions = completion_loss(model, ids, labels, contextlib.nullcontext, position_ids=positions).item()
        as_one_sequence = completion_loss(model, ids, labels, contextlib.nullcontext, position_ids=positions,
                                          cu_seq_lens_q=bounds[[0, -1]]).item()
    counts = [len(row) - p for row, p in zip(rows, prompts)]
    expected = sum(loss * n for loss, n in zip(own, counts)) / sum(counts)
    assert from_bounds == pytest.approx(expected, rel=1e-5) and from_positions == pytest.approx(expected, rel=1e-5)
    assert as_one_sequence != pytest.approx(expected, rel=1e-3)  # the bounds are what keeps the sequences apart
    padding = torch.ones_like(ids)
    padding[0, :2] = 0  # left padding: the causal kernel alone would let the row attend to its pads
    with pytest.raises(ValueError, match="without an attention mask"):
        model(input_ids=ids, attention_mask=padding)


def test_causal_attention_by_matmuls_equals_sdpas_with_grouped_heads_and_gradients():
    import torch
    import torch.nn.functional as F

    from kpdd.finetune.attention import causal_matmul_attention

    torch.manual_seed(0)
    query, key, value = (torch.randn(2, heads, 7, 16, requires_grad=True) for heads in (6, 2, 2))
    out = causal_matmul_attention(query, key, value)
    expected = F.scaled_dot_product_attention(query, key, value, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, (query, key, value), grad)
    theirs = torch.autograd.grad(expected, (query, key, value), grad)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype, by_matmuls", [("bfloat16", [5, 1]), ("float32", [])])
def test_packed_attention_takes_matmuls_for_short_bf16_sequences_and_sdpas_kernel_otherwise(monkeypatch, dtype,
                                                                                            by_matmuls):
    """Each packed sequence attends causally on its own, whichever path it takes: two matmuls for a bf16 sequence
    up to MATMUL_MAX_LENGTH tokens, SDPA's kernel for longer ones and fp32."""
    import torch
    import torch.nn.functional as F

    import kpdd.finetune.attention as attention

    real, taken = attention.causal_matmul_attention, []
    monkeypatch.setattr(attention, "MATMUL_MAX_LENGTH", 8)
    monkeypatch.setattr(attention, "causal_matmul_attention",
                        lambda *args: taken.append(args[0].shape[2]) or real(*args))
    module = SimpleNamespace(num_key_value_groups=3, is_causal=True, training=True)
    torch.manual_seed(0)
    sizes = [5, 12, 1]
    query, key, value = (torch.randn(1, heads, sum(sizes), 16, dtype=getattr(torch, dtype)) for heads in (6, 2, 2))
    out, _ = attention.packed_sdpa_attention(module, query, key, value, None,
                                             cu_seq_lens_q=torch.tensor([0, 5, 17, 18]))
    expected = torch.cat([F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                          for q, k, v in zip(*(t.float().split(sizes, 2) for t in (query, key, value)))],
                         dim=2).transpose(1, 2)
    assert taken == by_matmuls  # 12 tokens: past the (lowered) length
    torch.testing.assert_close(out.float(), expected, rtol=0, atol=0.03 if dtype == "bfloat16" else 1e-5)


def test_the_loss_in_bf16_stays_within_a_rounding_of_fp32(tmp_path):
    """Under autocast the log-softmax runs on the head's bf16 output; the picked log-probabilities sum in fp32."""
    import contextlib

    import torch

    model = tiny_model(tmp_path).eval()
    torch.manual_seed(1)
    ids, labels, _, _ = packed([torch.randint(5, 1000, (40,))], [10])
    with torch.no_grad():
        fp32 = completion_loss(model, ids, labels, contextlib.nullcontext).item()
        bf16 = completion_loss(model, ids, labels, lambda: torch.autocast("cpu", dtype=torch.bfloat16)).item()
    assert bf16 == pytest.approx(fp32, rel=5e-3) and bf16 != fp32


@pytest.mark.slow
def test_cpu_default_passes_put_long_rows_with_fewer_others_and_cover_every_row_once(tmp_path, monkeypatch):
    """The peak memory follows the largest pass: the longest rows of a step share a pass with fewer rows than the
    shortest, the largest step comes first, and each epoch still trains on every record once."""
    import kpdd.finetune.trainer as trainer

    passes = []
    real = trainer.completion_loss

    def recording(model, input_ids, labels, *args, **kwargs):
        passes.append((input_ids.shape, (labels != -100).sum(dim=1).tolist()))
        return real(model, input_ids, labels, *args, **kwargs)

    monkeypatch.setattr(trainer, "completion_loss", recording)
    records = chat_records(n=16)
    pad = {"role": "user", "content": " ".join(["and then"] * 60)}  # a long prompt: the row, not its loss, grows
    records = [dict(r, messages=[pad] + r["messages"]) if i % 4 == 0 else r for i, r in enumerate(records)]
    settings = {**TINY, "batch_size": None, "grad_accum": None, "packing": False, "save_steps": 100}
    train_student(TrainConfig(epochs=1.0, **settings), records, [], tmp_path / "s", progress=False)
    rows = [shape[0] for shape, _ in passes]
    assert sum(rows) == len(records) and len(passes) == 2 * (len(records) // 8)
    steps = [sorted((first[0], second[0]), key=lambda shape: -shape[1])  # the two passes of a step, longer first
             for first, second in zip(passes[::2], passes[1::2])]
    assert all(long[0] <= short[0] and long[1] % 64 == 0 == short[1] % 64 for long, short in steps)
    assert any(long[0] < short[0] for long, short in steps), steps  # four rows a pass would not be balanced
    # The largest pass comes first: a run that cannot hold it fails at once.
    assert max(shape[0] * shape[1] for shape, _ in passes[:2]) == max(shape[0] * shape[1] for shape, _ in passes)


def test_torch_threads_are_the_callers_and_default_to_the_cores_this_process_may_use(monkeypatch):
    import os

    import torch

    cores = sorted(os.sched_getaffinity(0))
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    before = torch.get_num_threads()
    try:
        assert use_torch_threads(0) == len(cores) == torch.get_num_threads()
        assert "VLLM_CPU_OMP_THREADS_BIND" not in os.environ  # every core: vLLM binds them itself
        assert use_torch_threads(1) == 1 and torch.get_num_threads() == 1
        if len(cores) > 1:  # a local vLLM engine started now binds to the same one core
            assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == str(cores[0])
    finally:
        torch.set_num_threads(before)


def test_budget_schedule_warms_up_then_follows_a_cosine_over_the_budgets_time():
    import torch

    class Clock:
        spent = 0.0

        def fraction(self):
            return self.spent

    clock = Clock()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = budget_schedule(optimizer, clock, warmup=4)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.25)  # step 0 of 4 warm-up steps
    for _ in range(5):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.0)
    clock.spent = 0.5  # half the budget spent (by this run or the ones it resumed)
    optimizer.step()
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    clock.spent = 1.0
    optimizer.step()
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.slow
def test_time_budget_counts_the_time_of_the_runs_it_resumes(tmp_path):
    records = chat_records(n=4)
    config = TrainConfig(max_steps=2, time_budget_s=3600.0, **{**TINY, "save_steps": 1, "keep_checkpoints": True})
    train_student(config, records, [], tmp_path / "s", progress=False)
    spent = json.loads((tmp_path / "s" / "checkpoints" / "checkpoint-2" / BUDGET_FILE).read_text())["trained_s"]
    assert 0 < spent < 3600
    (tmp_path / "s" / STUDENT_FILE).unlink()  # as if killed after the last checkpoint
    # The rerun's budget is already spent by the first run: it stops after one step instead of running to 500.
    again = TrainConfig(max_steps=500, time_budget_s=spent, **{**TINY, "save_steps": 1})
    result = train_student(again, records, [], tmp_path / "s", progress=False)
    assert result.steps == 3


def test_one_row_a_pass_is_neither_padded_nor_reordered(tmp_path):
    args = _sft_config(TrainConfig(packing=False, batch_size=1, grad_accum=8).for_device("cpu"), tmp_path, "cpu",
                       has_val=False)
    assert args.train_sampling_strategy == "random" and args.pad_to_multiple_of is None


def test_freed_memory_goes_back_every_few_steps_and_after_checkpoints(monkeypatch):
    """glibc's malloc_trim: every ``every`` steps, after each save and evaluation, at the end, and not in between."""
    import ctypes

    from transformers import TrainerCallback  # noqa: F401  (imported before ctypes.CDLL counts)

    calls = []
    real_cdll = ctypes.CDLL

    class CountingLibc:  # glibc's malloc, as in a process without jemalloc: no mallctl
        def __init__(self, name, *args, **kwargs):
            self._libc = real_cdll(name, *args, **kwargs)

        def malloc_trim(self, pad):
            calls.append(pad)
            return self._libc.malloc_trim(pad)

    monkeypatch.setattr(ctypes, "CDLL", CountingLibc)
    trim = _ReturnFreedMemory(every=3)
    state = SimpleNamespace(global_step=0)
    for step in range(1, 7):
        state.global_step = step
        trim.on_step_end(None, state, None)
    assert len(calls) == 2  # steps 3 and 6
    trim.on_save(None, state, None)
    trim.on_evaluate(None, state, None)
    trim.on_train_end(None, state, None)
    assert calls == [0, 0, 0, 0, 0]


def test_a_cpu_training_packs_its_rows_and_saves_a_model_any_loader_reads(tmp_path, monkeypatch):
    """The default CPU training hands packed rows with their bounds to the loss; the saved weights' config names
    no attention of ours (vLLM or transformers load it without kpdd)."""
    import kpdd.finetune.trainer as trainer
    from kpdd.finetune.attention import SDPA_PACKED

    passes = []
    real = trainer.completion_loss

    def recording(model, input_ids, labels, *args, **kwargs):
        passes.append((input_ids.shape, kwargs.get("cu_seq_lens_q")))
        return real(model, input_ids, labels, *args, **kwargs)

    monkeypatch.setattr(trainer, "completion_loss", recording)
    settings = {**TINY, "lora": False, "max_steps": 2, "save_steps": 100}
    result = train_student(TrainConfig(**settings), chat_records(n=8), [], tmp_path / "s", progress=False)
    assert len(passes) == 2 and all(shape[0] == 1 for shape, _ in passes)
    assert result.tokens == sum(shape[1] for shape, _ in passes)  # every token of a packed row is real
    assert all(bounds[0] == 0 and bounds[-1] == shape[1] for shape, bounds in passes)
    assert any(len(bounds) > 2 for _, bounds in passes)  # several sequences in a row
    config = (tmp_path / "s" / trainer.WEIGHTS / "config.json").read_text()
    assert SDPA_PACKED not in config
