"""A scripted LM that keeps every prompt it is sent: the real DSPy adapter path, no network."""

from types import SimpleNamespace

import dspy


class RecordingLM(dspy.BaseLM):
    """An LM that answers from a list and keeps every prompt it was sent."""

    def __init__(self, completions):
        super().__init__(model="recording", cache=False)
        self.completions, self.prompts, self.sent_kwargs = list(completions), [], []

    def forward(self, prompt=None, messages=None, **kwargs):
        self.prompts.append(messages)
        self.sent_kwargs.append(kwargs)
        text = self.completions.pop(0)
        choice = SimpleNamespace(message=SimpleNamespace(content=text, tool_calls=None), finish_reason="stop",
                                 logprobs=None)
        return SimpleNamespace(choices=[choice], usage={}, model="recording")
