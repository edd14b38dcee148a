"""A scripted OpenAI-compatible teacher on 127.0.0.1, for tests of the LM-teacher path.

It answers ``/v1/chat/completions`` in DSPy's ChatAdapter format: it reads which output fields the system prompt
asks for and the question from the user message, and fills the fields so that the program's final answer is the
gold one (from ``answers``) — or a wrong one for questions listed in ``wrong``. Faults are injected on demand:
``faults`` is a list consumed one per request (``"429"``, ``"500"``, ``"slow"`` (sleeps past the client's
timeout), ``"garbage"`` (a body that is not JSON), ``None`` (answer normally)). ``programs`` scripts a sampling
student: question → programs, the n-th request for that question answering the ``program`` field with the n-th
(cycling), so k samples of one question can be partly right, partly wrong, partly duplicates.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FIELD = re.compile(r"^\d+\. `(\w+)`", re.MULTILINE)


def _fields(system: str) -> list[str]:
    """The output fields the ChatAdapter's system prompt lists."""
    outputs = system.split("Your output fields are:", 1)[1].split("All interactions", 1)[0]
    return FIELD.findall(outputs)


def _question(user: str) -> str:
    after = user.split("[[ ## question ## ]]\n", 1)[1]
    return re.split(r"\n\n(?:\[\[ ## |Respond with)", after, maxsplit=1)[0].strip()


def _value(field: str, answer: float) -> str:
    """The field's text for a question whose answer is ``answer``; other fields (an optimizer's own
    signatures, e.g. instruction proposals) get a plain sentence."""
    number = f"{answer:g}"
    return {
        "core_question": "What is the total?",
        "key_points": json.dumps([f"The result is {number}."]),
        "reasoning": f"The total is {number}.",
        "answer": number,
        "program": f"ans = {number}",
        "sub_questions": json.dumps(["What is the total?"]),
        "sub_answer": f"The total is {number}.",
    }.get(field, "Solve the problem carefully, one step at a time.")


class ScriptedTeacher:
    def __init__(self, answers: dict[str, float], wrong: set[str] = frozenset(), faults: list | None = None,
                 slow_s: float = 3.0, programs: dict[str, list[str]] | None = None):
        self.answers, self.wrong, self.faults, self.slow_s = answers, set(wrong), list(faults or []), slow_s
        self.programs, self.asked = programs or {}, {}
        self.requests = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def reply(self, body: dict) -> tuple[int, bytes]:
        with self.lock:
            self.requests += 1
            fault = self.faults.pop(0) if self.faults else None
        if fault == "429":
            return 429, b'{"error": {"message": "rate limited", "type": "rate_limit"}}'
        if fault == "500":
            return 500, b'{"error": {"message": "server error"}}'
        if fault == "garbage":
            return 200, b"<html>this is not json"
        if fault == "slow":
            time.sleep(self.slow_s)
        messages = body["messages"]
        system = next(m["content"] for m in messages if m["role"] == "system")
        question = _question(messages[-1]["content"]) if "[[ ## question ## ]]" in messages[-1]["content"] else ""
        answer = self.answers.get(question, 0.0)
        if question in self.wrong:
            answer += 1
        values = {f: _value(f, answer) for f in _fields(system)}
        if "program" in values and question in self.programs:
            with self.lock:
                n = self.asked[question] = self.asked.get(question, -1) + 1
            values["program"] = self.programs[question][n % len(self.programs[question])]
        content = "\n\n".join(f"[[ ## {f} ## ]]\n{v}" for f, v in values.items())
        content += "\n\n[[ ## completed ## ]]"
        completion = {"id": f"c{self.requests}", "object": "chat.completion", "created": 0, "model": body["model"],
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                   "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}
        return 200, json.dumps(completion).encode()

    def _handler(self):
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, data = teacher.reply(body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        return Handler
