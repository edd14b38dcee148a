"""A scripted OpenAI-compatible teacher on 127.0.0.1, for tests of the LM-teacher path.

It answers ``/v1/chat/completions`` in DSPy's ChatAdapter format: it reads which output fields the system prompt
asks for and the question from the user message, and fills the fields so that the program's final answer is the
gold one (from ``answers``) — or a wrong one for questions listed in ``wrong``. Faults are injected on demand:
``faults`` is a list (or any iterator, e.g. ``itertools.cycle``) consumed one per request (``"429"`` (with a
``Retry-After`` of ``retry_after`` seconds), ``"500"``, ``"401"``, ``"slow"`` (sleeps past the client's timeout),
``"garbage"`` (a body that is not JSON), ``None`` (answer normally)). ``programs`` scripts a sampling
student: question → programs, the n-th request for that question answering the ``program`` field with the n-th
(cycling), so k samples of one question can be partly right, partly wrong, partly duplicates.

A fleet of teacher servers is modelled with ``latency_s`` (every answer takes that long) and ``capacity``
(requests served at once; the others wait, as on a GPU server at its batch limit). :class:`TeacherProcess` runs
one in its own process, so that a test can kill it outright (``python tests/scripted_teacher.py --help``).

A weak model is modelled per output field: ``field_faults`` maps a field an optimizer's own signature asks for
(e.g. ``proposed_instruction``, ``summary``) to ``"off-format"`` (an answer no adapter parses, as a small model
writes), ``"slow"`` (sleeps ``slow_s``, past the client's timeout) or ``"die"`` (the server stops listening at the
first such request, answering none of it). ``off_format`` lists questions whose program calls are answered
off-format. ``fields_asked`` records the output fields of every request, in order.

Like a real server it can also refuse a wrong key (``api_key``: 401 unless the request carries it), refuse a model
it does not serve (``models``: 404, as vLLM answers), and die: ``die_after=n`` stops listening once ``n`` requests
were answered (later connections are refused). ``port`` binds a given port, e.g. to bring a dead server back.
``respond`` scripts the teacher of any program:
``respond(fields, user message) -> {field: text}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

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
    def __init__(self, answers: dict[str, float], wrong: set[str] = frozenset(), faults=None, slow_s: float = 3.0,
                 latency_s: float = 0.0, capacity: int | None = None, retry_after: int = 0, port: int = 0,
                 programs: dict[str, list[str]] | None = None, api_key: str | None = None,
                 models: set[str] | None = None, die_after: int | None = None,
                 field_faults: dict[str, str] | None = None, off_format: set[str] = frozenset(), respond=None):
        self.answers, self.wrong, self.faults, self.slow_s = answers, set(wrong), iter(faults or []), slow_s
        self.programs, self.asked = programs or {}, {}
        self.latency_s, self.retry_after = latency_s, retry_after
        self.slots = threading.Semaphore(capacity) if capacity else contextlib.nullcontext()
        self.api_key, self.models, self.die_after = api_key, models, die_after
        # respond(fields, user message) -> {field: text}: a teacher for any program's signatures
        self.respond = respond
        self.field_faults, self.off_format = field_faults or {}, set(off_format)
        self.fields_asked: list[list[str]] = []
        self.requests = 0
        self.request_times: list[float] = []  # when each request arrived (time.monotonic)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.closed, self.gone = threading.Event(), threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Stop listening: new connections are refused from now on (also when another thread is closing it, so
        that the port is free once this returns)."""
        with self.lock:
            closing = not self.closed.is_set()
            self.closed.set()
        if not closing:
            self.gone.wait(10)
            return
        self.server.shutdown()
        self.server.server_close()
        self.gone.set()

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
            self.request_times.append(time.monotonic())
            fault = next(self.faults, None)
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
        with self.slots:
            time.sleep(self.latency_s)
        messages = body["messages"]
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        question = _question(messages[-1]["content"]) if "[[ ## question ## ]]" in messages[-1]["content"] else ""
        fields = _fields(system) if system and "Your output fields are:" in system else []
        with self.lock:
            self.fields_asked.append(fields)
        field_fault = next((self.field_faults[f] for f in fields if f in self.field_faults), None)
        if field_fault == "die":
            threading.Thread(target=self.close, daemon=True).start()
            return None
        if field_fault == "slow":
            time.sleep(self.slow_s)
        answer = self.answers.get(question, 0.0)
        if question in self.wrong:
            answer += 1
        if system is None:  # a plain prompt (e.g. a connection probe), not a DSPy program's call
            content = "OK"
        elif field_fault == "off-format" or question in self.off_format:
            content = "{[{'x', 'flax}}"  # what SmolLM2 once answered MIPROv2's proposer
        else:
            if self.respond is not None:
                values = self.respond(_fields(system), messages[-1]["content"])
            else:
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
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do: a client reuses its connections

            def log_message(self, *args):
                pass

            def do_POST(self):
                if teacher.closed.is_set():  # a dead server answers nothing, also on a kept-alive connection
                    self.close_connection = True
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                replied = teacher.reply(body, self.headers.get("Authorization"))
                if replied is None:  # died at this request: the connection drops without an answer
                    self.close_connection = True
                    return
                status, data = replied
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Retry-After", str(teacher.retry_after))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)
                if teacher.die_after is not None and teacher.requests >= teacher.die_after:
                    self.close_connection = True
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


class TeacherProcess:
    """A :class:`ScriptedTeacher` in a child process: ``kill()`` ends it with SIGKILL, mid-request if need be,
    as a crashed or pre-empted server would."""

    def __init__(self, answers: dict[str, float], latency_s: float = 0.0, capacity: int | None = None):
        self.answers_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(answers, self.answers_file)
        self.answers_file.close()
        command = [sys.executable, __file__, "--answers", self.answers_file.name, "--latency", str(latency_s)]
        if capacity:
            command += ["--capacity", str(capacity)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().strip()  # the child prints its URL once it listens
        if not self.url.startswith("http"):
            raise RuntimeError(f"scripted teacher process did not start: {self.url!r}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        self.process.stdout.close()
        Path(self.answers_file.name).unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a scripted OpenAI-compatible teacher on 127.0.0.1.")
    parser.add_argument("--answers", required=True, help="JSON file: question text -> gold answer")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds every answer takes")
    parser.add_argument("--capacity", type=int, default=None, help="requests served at once (default: no limit)")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    args = parser.parse_args()
    answers = json.loads(Path(args.answers).read_text())
    teacher = ScriptedTeacher(answers, latency_s=args.latency, capacity=args.capacity, port=args.port)
    print(teacher.url, flush=True)
    teacher.server.serve_forever()


if __name__ == "__main__":
    main()
