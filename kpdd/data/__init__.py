"""Dataset loaders: GSM8K, SVAMP, ASDiv, MultiArith and user files → :class:`Record` → ``dspy.Example``."""

from kpdd.data.loaders import (
    DATASETS,
    EVAL_DATASETS,
    asdiv_answer,
    load_dataset,
    load_file,
    load_records,
    read_split,
    resolve_data_dir,
)
from kpdd.data.records import LoadedSplit, Record, sample_records

__all__ = [
    "DATASETS", "EVAL_DATASETS", "LoadedSplit", "Record", "asdiv_answer", "load_dataset", "load_file",
    "load_records", "read_split", "resolve_data_dir", "sample_records",
]
