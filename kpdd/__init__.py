"""kpdd: distil maths reasoning pipelines written as DSPy modules into a small model's weights.

Importing kpdd changes nothing in the environment; the CLI and the scripts set the offline defaults
(:func:`kpdd.config.use_offline_defaults`).
"""

__version__ = "0.1.0"
