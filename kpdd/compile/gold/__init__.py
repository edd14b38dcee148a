"""The gold teacher: traces built from the datasets' own annotations, with no LM (see :mod:`.teacher`)."""

from kpdd.compile.gold.teacher import GoldTeacher

__all__ = ["GoldTeacher"]
