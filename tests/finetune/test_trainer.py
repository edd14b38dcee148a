"""Fine-tuning the real shipped student on CPU: loss falls, the adapter saves and loads, training resumes,
and DSPy's BootstrapFinetune drives our Provider end to end."""

import json

import dspy
import pytest
from dspy.utils import DummyLM

from kpdd.compile.gold import GoldTeacher
from kpdd.data import load_dataset
from kpdd.engines.compiled import load_compiled, save_compiled
from kpdd.engines.lm import student_lm
from kpdd.finetune.provider import BootstrapFinetune, KpddProvider
from kpdd.finetune.sft import build_sft_data, merge_tasks
from kpdd.finetune.student import read_student
from kpdd.finetune.trainer import STUDENT_FILE, TrainConfig, train_student, warmup_steps
from kpdd.modules import answer_metric, build_program
from kpdd.modules.student_format import StudentAdapter

pytestmark = pytest.mark.slow
TINY = dict(batch_size=1, grad_accum=1, max_length=384, learning_rate=2e-3, logging_steps=1, eval_steps=100, save_steps=2,
            lora_r=8, lora_alpha=16)


def chat_records(method="direct", n=8):
    teacher = GoldTeacher(method)
    traces = []
    for example in load_dataset("gsm8k", "train", limit=n, seed=4):
        result = teacher.sample(example)
        traces += [{"id": example.id, "question_id": example.id, **trace} for trace in result.traces]
    return merge_tasks(build_sft_data(traces, build_program(method), val_fraction=0.0))["train"]


def mean_loss(student_dir, records):
    """Mean completion loss of a student (base + adapter) on chat records, computed independently of TRL."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = read_student(student_dir)
    tokenizer = AutoTokenizer.from_pretrained(ref.base_path)
    model = AutoModelForCausalLM.from_pretrained(ref.base_path, dtype=torch.float32)
    if ref.adapter_path:
        model = PeftModel.from_pretrained(model, ref.adapter_path)
    losses = []
    with torch.inference_mode():
        for record in records:
            prompt = tokenizer.apply_chat_template(record["messages"][:-1], add_generation_prompt=True, return_dict=False)
            full = tokenizer.apply_chat_template(record["messages"], return_dict=False)
            labels = torch.tensor([[-100] * len(prompt) + full[len(prompt):]])
            losses.append(model(input_ids=torch.tensor([full]), labels=labels).loss.item())
    return sum(losses) / len(losses)


def test_lora_finetune_lowers_the_loss_and_the_adapter_round_trips(tmp_path, capfd):
    records = chat_records()
    result = train_student(TrainConfig(max_steps=4, **TINY), records, records[:2], tmp_path / "s", program="direct")
    shown = capfd.readouterr()
    # One bar with the loss and tokens/s; the trainer's log dictionaries are not printed.
    assert "train s" in shown.err and "tok/s" in shown.err and "loss=" in shown.err
    assert "{'loss'" not in shown.out + shown.err and "'eval_loss'" not in shown.out + shown.err
    ref = read_student(tmp_path / "s")
    assert ref.model_id == result.model_id and ref.program == "direct" and ref.adapter_path.is_dir()
    assert (ref.adapter_path / "adapter_config.json").is_file()
    assert result.steps == 4 and result.tokens > 0 and result.val_loss is not None
    base_loss = mean_loss("smollm2-135m", records)
    tuned_loss = mean_loss(tmp_path / "s", records)
    assert tuned_loss < 0.8 * base_loss, (base_loss, tuned_loss)
    assert ref.train["train/steps"] == 4  # the figures travel with the weights


def test_training_resumes_from_the_latest_checkpoint(tmp_path):
    records = chat_records(n=4)
    every_step = {**TINY, "save_steps": 1, "keep_checkpoints": True}
    train_student(TrainConfig(max_steps=2, **every_step), records, [], tmp_path / "s", progress=False)
    (tmp_path / "s" / STUDENT_FILE).unlink()  # as if killed after the step-2 checkpoint, before the end
    checkpoints = tmp_path / "s" / "checkpoints"
    seen_at_2 = json.loads((checkpoints / "checkpoint-2" / "trainer_state.json").read_text())["num_input_tokens_seen"]
    resumed = train_student(TrainConfig(max_steps=4, **every_step), records, [], tmp_path / "s", progress=False)
    state = json.loads((checkpoints / "checkpoint-4" / "trainer_state.json").read_text())
    assert resumed.steps == 4 and state["global_step"] == 4
    assert [h["step"] for h in resumed.history if "train/loss" in h] == [3, 4]  # steps 1-2 were not redone
    # The figures are this run's: its tokens, though the rotation deleted the checkpoint it resumed from.
    assert not (checkpoints / "checkpoint-2").exists()
    assert 0 < resumed.tokens == state["num_input_tokens_seen"] - seen_at_2


def test_a_finished_student_keeps_no_checkpoints_unless_asked(tmp_path):
    records = chat_records(n=4)
    every_step = {**TINY, "save_steps": 1}
    train_student(TrainConfig(max_steps=2, **every_step), records, [], tmp_path / "s", progress=False)
    assert (tmp_path / "s" / STUDENT_FILE).is_file() and not (tmp_path / "s" / "checkpoints").exists()
    kept = TrainConfig(max_steps=2, keep_checkpoints=True, **every_step)
    train_student(kept, records, [], tmp_path / "kept", progress=False)
    kept_checkpoints = (tmp_path / "kept" / "checkpoints").glob("checkpoint-*")
    assert sorted(p.name for p in kept_checkpoints) == ["checkpoint-1", "checkpoint-2"]


def test_time_budget_stops_training_early_and_warms_up_in_a_few_steps(tmp_path):
    records = chat_records(n=4)
    config = TrainConfig(max_steps=500, time_budget_s=1.0, **TINY)
    result = train_student(config, records, [], tmp_path / "s", progress=False)
    assert 1 <= result.steps < 500 and read_student(tmp_path / "s").train["train/steps"] == result.steps
    assert warmup_steps(config) == 10 and warmup_steps(TrainConfig()) == TrainConfig().warmup_ratio


def test_bootstrap_finetune_with_our_provider_uses_the_students_format_end_to_end(tmp_path):
    """BootstrapFinetune(adapter=StudentAdapter()) trains on the students' format; the student records it, and
    the saved-and-loaded program speaks it with no adapter configured by the caller."""
    trainset = load_dataset("gsm8k", "train", limit=6, seed=7)
    teacher = build_program("direct")
    teacher.set_lm(DummyLM([{"answer": f"{e.answer:g}"} for e in trainset]))
    student = build_program("direct")
    provider = KpddProvider(root=tmp_path / "students", defaults=TrainConfig(max_steps=2, **TINY), progress=False)
    base_lm = student_lm("smollm2-135m", max_tokens=16)
    student.set_lm(dspy.LM(base_lm.model, engine=base_lm.engine, provider=provider, max_tokens=16, temperature=0.0))
    optimizer = BootstrapFinetune(metric=answer_metric, num_threads=1, adapter=StudentAdapter())
    compiled = optimizer.compile(student, trainset=trainset, teacher=teacher)
    lm = compiled.solve.lm
    assert lm.model.startswith("local/smollm2-135m-ft-") and lm.engine is base_lm.engine
    ref = read_student(next((tmp_path / "students").iterdir()))
    assert ref.adapter_path.is_dir() and ref.train["records"]["train"] + ref.train["records"]["validation"] == 6
    assert ref.prompt_format == "student"  # detected from the records DSPy handed the Provider

    with dspy.context(adapter=StudentAdapter()):
        try:
            before = compiled(question=trainset[0].question).answer
        except dspy.utils.exceptions.AdapterParseError:
            before = "unparsed"
    save_compiled(compiled, tmp_path / "program", "direct")
    assert json.loads((tmp_path / "program" / "kpdd-program.json").read_text())["prompt_format"] == "student"
    loaded = load_compiled(tmp_path / "program", max_tokens=16)
    assert loaded.solve.lm.model == lm.model  # the same weights, found through the saved directory
    try:  # no adapter in the context: the program carries its student's
        after = loaded(question=trainset[0].question).answer
    except dspy.utils.exceptions.AdapterParseError:
        after = "unparsed"
    sent = loaded.solve.lm.history[-1]["messages"]
    assert sent[0] == {"role": "system", "content": "answer"} and "[[ ##" not in str(sent)
    assert after == before  # greedy decoding of the same student


def test_better_together_runs_prompt_then_weight_optimisation(tmp_path, caplog):
    """`dspy.BetterTogether` (p -> w) with our BootstrapFinetune and Provider on a real HTTP teacher."""
    import uuid

    from scripted_teacher import ScriptedTeacher

    from kpdd.engines.lm import teacher_lm

    trainset = load_dataset("gsm8k", "train", limit=8, seed=7)
    with ScriptedTeacher({e.question: e.answer for e in trainset}) as server:
        teacher = build_program("direct")
        teacher.set_lm(teacher_lm(f"openai/t-{uuid.uuid4().hex}", api_base=server.url))
        student = build_program("direct")
        provider = KpddProvider(root=tmp_path / "students", defaults=TrainConfig(max_steps=2, **TINY), progress=False)
        student.set_lm(student_lm("smollm2-135m", max_tokens=16, provider=provider))
        optimizer = dspy.BetterTogether(
            metric=answer_metric, w=BootstrapFinetune(metric=answer_metric, num_threads=1),
            p=dspy.BootstrapFewShot(metric=answer_metric, max_bootstrapped_demos=1, max_labeled_demos=1))
        with dspy.context(adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
            optimizer.compile(student, trainset=trainset[:6], valset=trainset[6:], strategy="p -> w",
                              optimizer_compile_args={"p": {"teacher": teacher}, "w": {"teacher": teacher}})
    assert "failed with error" not in caplog.text
    (trained,) = (tmp_path / "students").iterdir()  # the w step fine-tuned a student through our Provider
    assert read_student(trained).adapter_path.is_dir()
