"""How a rationale line words a number, against how the question words it: which of the question's quantities a
number of the rationale may be.

A rationale often writes the noun of a number it reads ('Darla bought 3 more', 'the 2 hexagons have 6 sides
each'). :func:`mention_words` finds the word right after each mention of a value in a line (none when an operator
follows: '2*20'); :func:`word_after` finds it for a question quantity. :func:`says` tells whether a text uses a
word, in the singular or the plural or abbreviated ('lbs' for 'pounds'); :func:`names_a_thing` whether a word is a
noun that can contradict a quantity (not 'times', 'each' or a unit of money); :func:`names_unit` whether a text
names a unit whose size is a value (60: 'minutes'). The gold program builder (:mod:`kpdd.compile.gold.programs`)
uses them to read '3 more' as the '3 more' of the question, not its '3 dog toys left', to read an hour's 60 minutes
as a literal, not as '$60 per article', and to drop a question whose rationale reads '6 sides' where the
question's only 6 counts cookie cutters; :mod:`kpdd.compile.gold.checks` to tell whether key points state a unit's
size.
"""

from __future__ import annotations

import re

from kpdd.compile.gold.calculations import TIMES_SIGN, WRITTEN_NUMBER, strip_annotations, written_value

_WORD = re.compile(r"\s*-?\s*([A-Za-z][A-Za-z']*)")
_ABBREVIATIONS = {"lb": "pound", "lbs": "pound", "oz": "ounce", "ft": "foot", "sq": "square", "hr": "hour",
                  "hrs": "hour", "min": "minute", "mins": "minute", "sec": "second", "secs": "second", "yd": "yard",
                  "yds": "yard", "mi": "mile", "km": "kilometer", "kg": "kilogram", "cm": "centimeter",
                  "ml": "milliliter", "mph": "mile", "pc": "piece", "pcs": "piece", "qt": "quart", "gal": "gallon",
                  "feet": "foot", "people": "person", "children": "child", "men": "man", "women": "woman",
                  "teeth": "tooth", "mice": "mouse", "geese": "goose"}
# Words after a number that say how it is used, not what it counts: '12 times 12', '$20 each', '3 more', '$5 gives'.
_NOT_NOUNS = set("""times time x equal equals each per plus minus total totals more less fewer extra left remaining
of and or is are was were be will would can could to in on at for from with by as so than then that this which who
because since if when while but a an the his her their its our my your percent dollar dollars cent cents buck bucks
unit units item items thing things altogether together all both only other another same whole new old different
gives give add adds added makes make made means leaves divided multiplied""".split())

# A unit's size is world knowledge: stated where the text names the unit, as a whole word ('day' is no part of
# 'Daytona'), in the singular, the plural or as the adjective ('daily', 'monthly').
UNIT_SIZES = {
    60: "minute min hour hr hourly second", 24: "hour hr hourly day daily", 7: "day daily week weekly",
    12: "month monthly year yearly annual annually dozen inch inches foot feet",
    52: "week weekly year yearly annual annually", 365: "day daily year yearly annual annually",
    30: "day daily month monthly", 31: "day daily month monthly",
    100: "% percent percentage cent century dollar centimeter centimetre cm meter metre",
    0.01: "% percent percentage cent",
    1000: "gram kilogram kg kilo meter metre kilometer kilometre km millimeter millimetre mm liter litre "
          "milliliter millilitre ml thousand",
    16: "ounce oz pound lb", 3: "foot feet yard yd", 4: "quarter gallon quart week month",
    8: "pint cup ounce oz gallon",
    2: "pint cup quart", 25: "quarter", 0.25: "quarter", 10: "dime decade", 0.1: "dime", 5: "nickel", 0.05: "nickel",
    3600: "hour hr second", 1440: "day minute", 2000: "ton", 5280: "mile foot feet",
}
_UNIT_NAMES = {value: re.compile(r"(?<![A-Za-z])(?:%s)(?:e?s|ly)?(?![A-Za-z])" % "|".join(words.split()), re.I)
               for value, words in UNIT_SIZES.items()}


def names_unit(literal: float, text: str) -> bool:
    """Whether ``text`` names, as a whole word, a unit whose size is ``literal`` (7: 'day', 'weekly')."""
    pattern = _UNIT_NAMES.get(round(float(literal), 6))
    return pattern is not None and bool(pattern.search(text))


def lemma(word: str) -> str:
    """'pounds' → 'pound', 'lbs' → 'pound', 'boxes' → 'box', 'people' → 'person' (suffix rules, no lexicon)."""
    word = word.lower().replace("'", "")
    if word in _ABBREVIATIONS:
        return _ABBREVIATIONS[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"  # 'berries' → 'berry', 'calories' → 'calory' (as 'calorie' is below)
    if word.endswith("ie") and len(word) > 3:
        return word[:-2] + "y"
    if re.search(r"(?:ss|sh|ch|x|z)es$", word):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 3 else word


def word_after(text: str) -> str:
    """The word right after a number, lower-case ('' when an operator, a digit or nothing follows)."""
    match = _WORD.match(text)
    return match.group(1).lower() if match else ""


def mention_words(line: str, value: float) -> list[str]:
    """The word after each digit mention of ``value`` in a rationale line (annotations cut out): 'The 2 hexagons
    have 6 sides each' with 6 → ['sides']; '2*20 = 40' with 2 → ['']."""
    plain = TIMES_SIGN.sub(" * ", strip_annotations(line))
    return [word_after(plain[m.end():]) for m in WRITTEN_NUMBER.finditer(plain) if written_value(m) == value]


def names_a_thing(word: str) -> bool:
    """Whether a word after a number names what it counts ('sides', 'parents'), not how it is used ('times')."""
    return len(word) > 1 and word not in _NOT_NOUNS


def says(word: str, text: str) -> bool:
    """Whether ``text`` uses ``word``: the same lemma ('pounds', 'lbs' and 'pound'), one word beginning the other
    ('hexagon' and 'hexagonal', at least 4 letters) or ending it ('days' and 'weekdays', at least 3)."""
    target = lemma(word)
    for other in map(lemma, re.findall(r"[A-Za-z][A-Za-z']*", text)):
        short, long = sorted((target, other), key=len)
        if short == long or len(short) >= 4 and long.startswith(short) or len(short) >= 3 and long.endswith(short):
            return True
    return False


def sentence_of(text: str, start: int, end: int) -> str:
    """The sentence of ``text`` holding ``text[start:end]``."""
    opening = max(text.rfind(mark, 0, start) for mark in (". ", "? ", "! "))
    closing = [i for i in (text.find(mark, end) for mark in (". ", "?", "!")) if i >= 0]
    return text[opening + 1: min(closing, default=len(text)) + 1].strip()


_CLAUSE_MARK = re.compile(r"[,;.?!](?=\s|$)")


def clause_of(text: str, start: int, end: int) -> str:
    """The clause of ``text`` holding ``text[start:end]``: from the punctuation mark before it to the one after
    (a decimal point or a thousands separator is none)."""
    opening = max((m.end() for m in _CLAUSE_MARK.finditer(text, 0, start)), default=0)
    closing = _CLAUSE_MARK.search(text, end)
    return text[opening: closing.start() if closing else len(text)].strip()
