"""A scripted OpenAI-compatible teacher on 127.0.0.1, for tests of the LM-teacher path.

It answers ``/v1/chat/completions`` in DSPy's ChatAdapter format: it reads which output fields the system prompt
asks for and the question from the user message, and fills the fields so that the program's final answer is the
gold one (from ``answers``) — or a wrong one for questions listed in ``wrong``. Faults are injected on demand:
``faults`` is a list consumed one per request (``"429"``, ``"500"``, ``"401"``, ``"slow"`` (sleeps past the
client's timeout), ``"garbage"`` (a body that is not JSON), ``None`` (answer normally)).

Like a real server it can also refuse a wrong key (``api_key``: 401 unless the request carries it), refuse a model
it does not serve (``models``: 404, as vLLM answers), and die: ``die_after=n`` stops listening once ``n`` requests
were answered (later connections are refused). ``port`` binds a given port, e.g. to bring a dead server back.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FIELD = re.compile(r"^\d+\. `(\w+)`", re.MULTILINE)
UNAUTHORIZED = b'{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", ' \
               b'"code": "invalid_api_key"}}'


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
                 slow_s: float = 3.0, api_key: str | None = None, models: set[str] | None = None,
                 die_after: int | None = None, port: int = 0):
        self.answers, self.wrong, self.faults, self.slow_s = answers, set(wrong), list(faults or []), slow_s
        self.api_key, self.models, self.die_after = api_key, models, die_after
        self.requests = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.closed = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Stop listening: new connections are refused from now on."""
        with self.lock:
            if self.closed.is_set():
                return
            self.closed.set()
        self.server.shutdown()
        self.server.server_close()

    def refusal(self, body: dict, authorization: str | None) -> tuple[int, bytes] | None:
        """A real server's 401 (wrong key) or 404 (a model it does not serve), else None."""
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            return 401, UNAUTHORIZED
        if self.models is not None and body.get("model") not in self.models:
            message = f"The model `{body.get('model')}` does not exist."
            return 404, json.dumps({"error": {"message": message, "type": "NotFoundError", "code": 404}}).encode()
        return None

    def reply(self, body: dict, authorization: str | None = None) -> tuple[int, bytes]:
        refused = self.refusal(body, authorization)
        if refused:
            return refused
        with self.lock:
            self.requests += 1
            fault = self.faults.pop(0) if self.faults else None
        if fault == "429":
            return 429, b'{"error": {"message": "rate limited", "type": "rate_limit"}}'
        if fault == "401":
            return 401, UNAUTHORIZED
        if fault == "500":
            return 500, b'{"error": {"message": "server error"}}'
        if fault == "garbage":
            return 200, b"<html>this is not json"
        if fault == "slow":
            time.sleep(self.slow_s)
        messages = body["messages"]
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        question = _question(messages[-1]["content"]) if "[[ ## question ## ]]" in messages[-1]["content"] else ""
        answer = self.answers.get(question, 0.0)
        if question in self.wrong:
            answer += 1
        if system is None:  # a plain prompt (e.g. a connection probe), not a DSPy program's call
            content = "OK"
        else:
            content = "\n\n".join(f"[[ ## {f} ## ]]\n{_value(f, answer)}" for f in _fields(system))
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
                status, data = teacher.reply(body, self.headers.get("Authorization"))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)
                if teacher.die_after is not None and teacher.requests >= teacher.die_after:
                    # shutdown() waits for serve_forever, which runs in another thread: never block a handler.
                    threading.Thread(target=teacher.close, daemon=True).start()

            def do_GET(self):  # /v1/models, as an OpenAI-compatible server lists what it serves
                data = json.dumps({"object": "list", "data": [{"id": m, "object": "model"}
                                                              for m in sorted(teacher.models or [])]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
