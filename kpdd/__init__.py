"""kpdd: distil maths reasoning pipelines written as DSPy modules into a small model's weights.

Importing kpdd sets the offline defaults (no hub downloads, no telemetry); an explicit value in the
environment wins.
"""

import os

for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_name, _value)

__version__ = "0.1.0"
