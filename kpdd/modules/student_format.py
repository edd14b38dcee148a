"""The students' prompt format: what a fine-tuned student reads and writes, with every token earning its place.

A teacher needs instructions, field descriptions and JSON-schema notes; a fine-tuned student carries them in its
weights, so `StudentAdapter` drops them. A call is::

    system     the output field names ("core_question key_points program"), so every task has its own tag
    user       question: <one-line value>           ← inputs, one short marker each
               key_points:                          ← lists one item per line, no JSON
               <item>
               <item>
    assistant  program:                             ← outputs the same way; multi-line values verbatim
               <the program>

The same adapter formats the SFT data (`format_finetune_data`) and the inference prompt, so they are identical up
to the completion. Parsing is tolerant (markers in any case, with spaces, `#`, `[[ ## x ## ]]` or `**x**`
decorations, bullets and numbering on list items); a completion missing a field raises DSPy's `AdapterParseError`
holding the raw text and whatever did parse. It subclasses `ChatAdapter` because DSPy's fine-tuning path
(`BootstrapFinetune`) accepts only chat adapters.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, get_args, get_origin

import dspy
from dspy.adapters.utils import parse_value
from dspy.utils.exceptions import AdapterParseError

CHAT, STUDENT = "chat", "student"
PROMPT_FORMATS = (STUDENT, CHAT)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_DECORATION = re.compile(r"[#*\[\]\s]+")
_CHAT_HEADER = re.compile(r"^\s*\[\[ ## (\w+) ## \]\]\s*(.*)$")


def is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list or annotation is list


def item_type(annotation: Any) -> Any:
    """The item type of a list annotation (``str`` for a bare ``list``)."""
    args = get_args(annotation)
    return args[0] if args else str


def _scalar_text(value: Any) -> str:
    """One value as text: structured values (dicts, pydantic models, nested lists) as JSON, the rest as written."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False)
    return str(value).strip()


def render_value(value: Any) -> str:
    """A field's text: list items one per line, structured values as JSON, anything else as it is."""
    if isinstance(value, (list, tuple)):
        return "\n".join(_scalar_text(item) for item in value)
    return _scalar_text(value)


def render_fields(values: dict[str, Any]) -> str:
    """``name: value`` for one-line values, ``name:`` then the lines for lists and multi-line text."""
    lines = []
    for name, value in values.items():
        text = render_value(value)
        multi_line = isinstance(value, (list, tuple)) or "\n" in text
        lines.append(f"{name}:\n{text}" if multi_line else f"{name}: {text}")
    return "\n".join(lines)


def _header(line: str, names: dict[str, str]) -> tuple[str, str] | None:
    """(field, rest of line) when ``line`` starts a field of ``names`` (normalised name → field name)."""
    chat_marker = _CHAT_HEADER.match(line)  # DSPy's own marker, which a student may have seen in pre-training
    if chat_marker:
        head, rest = chat_marker.groups()
    else:
        head, colon, rest = line.partition(":")
        if not colon:
            return None
    key = _DECORATION.sub(" ", head).strip().lower().replace(" ", "_")
    if key in names:
        return names[key], rest.strip().removeprefix("**").strip()
    return None


def split_fields(completion: str, fields: list[str]) -> dict[str, str]:
    """The raw text of each field found in ``completion`` (the first occurrence wins)."""
    names = {name.lower(): name for name in fields}
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in completion.splitlines():
        header = _header(line, names)
        if header:
            sections.append((header[0], [header[1]] if header[1] else []))
        else:
            sections[-1][1].append(line)
    found: dict[str, str] = {}
    for name, lines in sections:
        if name is not None and name not in found:
            found[name] = "\n".join(lines).strip("\n")
    return found


def parse_list(text: str, item: Any = str) -> list:
    """One item per line (bullets and numbering dropped), each read as ``item``; a JSON or Python list literal is
    read as such."""
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        for loads in (json.loads, ast.literal_eval):
            try:
                value = loads(stripped)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, list) and (item is not str or not any(isinstance(v, (list, dict)) for v in value)):
                return [str(v) if item is str else parse_value(v if isinstance(v, str) else json.dumps(v), item)
                        for v in value]
    lines = [line.strip() if item is str else line for line in text.splitlines() if line.strip()]
    items = [_BULLET.sub("", line).strip() for line in lines]
    return items if item is str else [parse_value(line, item) for line in items]


def with_restart_stop(lm, lm_kwargs: dict[str, Any], signature: type[dspy.Signature]) -> dict[str, Any]:
    """``lm_kwargs`` plus a stop at a second marker of the first output field: a completion in this format writes
    each field once, so a student that starts over (a weak one loops ``core_question: … key_points:
    core_question: …``) has nothing more to say; stopping there saves the rest of ``max_tokens`` and parses the same
    (the first occurrence of a field wins)."""
    first = next(iter(signature.output_fields))
    stops = lm_kwargs.get("stop", lm.kwargs.get("stop")) or []
    stops = [stops] if isinstance(stops, str) else list(stops)
    return {**lm_kwargs, "stop": [*stops, f"\n{first}:"]}


class StudentAdapter(dspy.ChatAdapter):
    """kpdd's compact format for fine-tuned students (see the module docstring)."""

    def __init__(self, **kwargs):
        super().__init__(use_json_adapter_fallback=False, **kwargs)  # a fallback prompt the student never saw

    def __call__(self, lm, lm_kwargs, signature, demos, inputs):
        return super().__call__(lm, with_restart_stop(lm, lm_kwargs, signature), signature, demos, inputs)

    async def acall(self, lm, lm_kwargs, signature, demos, inputs):
        return await super().acall(lm, with_restart_stop(lm, lm_kwargs, signature), signature, demos, inputs)

    def format_system_message(self, signature: type[dspy.Signature]) -> str:
        return " ".join(signature.output_fields)

    def format_user_message_content(self, signature, inputs, prefix="", suffix="", main_request=False) -> str:
        values = {name: inputs[name] for name in signature.input_fields if inputs.get(name) is not None}
        return "\n".join(part for part in (prefix, render_fields(values), suffix) if part)

    def format_assistant_message_content(self, signature, outputs, missing_field_message=None) -> str:
        return render_fields({name: outputs.get(name, missing_field_message) for name in signature.output_fields})

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        raw = split_fields(completion, list(signature.output_fields))
        fields: dict[str, Any] = {}
        for name, field in signature.output_fields.items():
            if name not in raw:
                continue
            annotation = field.annotation
            try:
                if is_list(annotation):
                    fields[name] = parse_list(raw[name], item_type(annotation))
                else:
                    fields[name] = parse_value(raw[name].strip(), annotation)
            except (ValueError, TypeError) as e:
                raise AdapterParseError(adapter_name="StudentAdapter", signature=signature, lm_response=completion,
                                        message=f"field {name}: {e}", parsed_result=fields) from None
        if fields.keys() != signature.output_fields.keys():
            raise AdapterParseError(adapter_name="StudentAdapter", signature=signature, lm_response=completion,
                                    parsed_result=fields)
        return fields


def adapter_for(prompt_format: str) -> dspy.ChatAdapter:
    """The adapter of a recorded prompt format: ``student`` (kpdd's compact one) or ``chat`` (DSPy's own)."""
    from kpdd.errors import ConfigError

    if prompt_format == STUDENT:
        return StudentAdapter()
    if prompt_format == CHAT:
        return dspy.ChatAdapter(use_json_adapter_fallback=False)
    raise ConfigError(f"prompt format {prompt_format!r}: expected one of {', '.join(PROMPT_FORMATS)}")


def detect_format(messages: list[dict]) -> str:
    """Which format a chat record was written in (DSPy hands the Provider messages, not the adapter)."""
    return CHAT if any("[[ ## " in str(m.get("content", "")) for m in messages) else STUDENT
