"""Programs of the gold teacher: GSM8K rationales and benchmark equations → named-variable Python programs.

Deterministic string work only; nothing here is executed (the teacher verifies programs in the sandbox). The
calculations come from :mod:`kpdd.compile.gold.calculations`, whose ``HEURISTICS`` version covers this module.

- **Quantities** (:func:`question_quantities`): the problem's digits (``$1,200``, ``80%``, ``2.5``, ``$.50``, glued
  to a unit or a rate: ``22kg``, ``$6/hour``), number words (``three``, ``twenty-five``, ``dozen``), multipliers
  (``twice``, ``double``, the ``five`` of 'five times'), fractions (``one-third`` is the denominator 3, ``1/4`` the
  numerator 1 and the denominator 4), a ratio's parts (``2:5``, ``4:3:7``, also at a sentence's end) and ordinals
  (``36th``), each a quantity of its own; clock times are skipped.
- **Names** (:func:`name_words`): snake_case from the words after a number up to the end of its clause (articles,
  pronouns and auxiliaries dropped, at most 3 content words, prepositions only between them, 'a'/'each'/'every'
  before a time unit read as 'per': ``duck_eggs_per_day``; money per unit: ``dollars_per_hour``); when nothing
  follows, the last 2 content words before it (plus ``dollars`` for money). Percentages end in ``_percent``;
  multipliers are ``times``, fractions ``third_denominator`` or ``fraction_numerator``, ratio parts by place
  (``ratio_part_1``, ``ratio_part_2``).
  A name already taken is qualified by the word before the number (``sharon_oranges``), else numbered
  (``oranges_2``); keywords and builtins get ``_value``.
- **Programs** (:func:`rationale_program`): the problem's quantities as named variables (only those used, in the
  problem's order), then one assignment per calculation up to the last one whose written result equals the gold
  answer, named by :func:`result_words` (the words after the result when they say more than a unit, else what
  the line says it computes, then that unit), then ``ans = <that variable>``. A number in an expression becomes
  a variable of equal value: of the quantities it may be (a multiplier only as a factor, a fraction's denominator
  only after '/', its numerator only before it, an ordinal only where nothing else has its value), those the line
  words alike (:mod:`kpdd.compile.gold.wording`: '3/4' is the question's '3/4'; the line's '3 more' the question's
  '3 more', not its '3 dog toys'; in a rationale about a ratio's parts, the ratio's part, not '2 partners'), of
  them the one whose words the line repeats most, a quantity not read yet before one read; else the latest result;
  '.40' as ``percent / 100`` of '40 percent'; ``/ 100`` stays literal (a percentage); any other number stays a
  literal (60 minutes, 52 weeks), as does a unit of time's size in a line that names the unit where the only equal
  quantity is a sum of money or a percentage the line never speaks of ('2 x 60 minutes', not '$60 per article').
  Equal numbers of one pure sum or product read different quantities.
  Equations (SVAMP, ASDiv, MultiArith) become the quantities plus ``ans = <equation>`` (:func:`equation_program`;
  ASDiv's '47/6=7 r5' becomes ``//`` or ``%``, whichever the answer is).
- **No binding by coincidence**: the builder raises ``NoTrace('ambiguous number: …')``, and the teacher drops the
  question, where the program would rest on two values being equal: quantities of one value whose words tie
  (unless they say the same thing: '2 packages … 2 packages'), a question quantity and a result of the same value
  that the line may both mean, an average's count equal to a result read again, a multiplier, fraction or ratio's
  part the program never reads beside an equal quantity it does read ('twice' and '2 hours'), a number the line
  names as another thing than the only quantity it could read ('6 sides' for '6 cookie cutters'), or a 2 read in
  a line that names a pair of other things ('The crate and bed ... 2*20' for '2 bags of treats'), or a result read
  again that equals the size of a unit of time the line names, as a factor or divisor ('240/60 = 4 hours' after
  '6 x 10 = 60 minutes'). A program with a step its answer never reads is dropped too ('a step the answer never
  reads'): the rationale went on from that step in prose (which bucket held 13 ounces), so its arithmetic is
  hand-picked.
"""

from __future__ import annotations

import builtins
import keyword
import re
from dataclasses import dataclass

from kpdd.compile.gold.calculations import (
    OPERATORS,
    WRITTEN_NUMBER,
    Calculation,
    NoTrace,
    balanced,
    format_number,
    frame,
    line_calculations,
    normalise_expression,
    rationale_lines,
    strip_annotations,
    written_value,
)
from kpdd.compile.gold.wording import (
    clause_of,
    lemma,
    mention_words,
    names_a_thing,
    names_unit,
    says,
    sentence_of,
    word_after,
)
from kpdd.eval.answers import is_correct

# Quantities and names -----------------------------------------------------------------------------------

_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                     "fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_MULTIPLES = {"hundred": 100, "thousand": 1000, "dozen": 12, "twice": 2, "double": 2, "doubled": 2, "doubles": 2,
              "triple": 3, "tripled": 3, "triples": 3, "thrice": 3, "quadruple": 4, "quadrupled": 4}
MULTIPLIERS = {"twice", "double", "doubled", "doubles", "triple", "tripled", "triples", "thrice", "quadruple",
               "quadrupled"}
_WORD_NUMBER = re.compile(r"\b(?:(%s)(?:-(%s))?|(%s))\b" % (
    "|".join(_TENS), "|".join(list(_UNITS)[1:10]), "|".join([*_UNITS, *_MULTIPLES])), re.IGNORECASE)


@dataclass(frozen=True)
class Quantity:
    """A number stated in a problem, with where it stands (for naming it)."""

    value: float
    text: str
    start: int
    end: int
    money: bool
    hundredths: bool = False  # a rationale may write it divided by 100: '40%', '40 percent', '5 cents'
    # 'multiplier' ('twice', 'five times'): a factor only; 'fraction': a fraction's part; 'ratio': a ratio's part;
    # 'ordinal' ('his 36th birthday'): read only where no other quantity or result has its value
    kind: str = "number"


def question_quantities(question: str) -> list[Quantity]:
    """Digits, number words, multipliers and fractions of a problem, in order of appearance. A fraction is a
    quantity of its own: 'one-third' is the denominator 3 (its 'one' is no other quantity), '1/4' the numerator 1
    and the denominator 4; a number before 'times' is a multiplier; digits glued to a unit ('22kg') and a decimal
    without its leading zero ('$.5') are a number, digits glued to an ordinal's suffix ('36th') an ordinal."""
    fractions = fraction_words(question) + written_fractions(question) + ratio_parts(question)
    inside = [(f.start, f.end) for f in fractions]
    found = [Quantity(written_value(m), m.group(), m.start(), m.end(), bool(m.group(1)),
                      bool(m.group(4)) or question[m.end():].lower().startswith(_HUNDREDTHS),
                      _kind(question, m.end()))
             for m in WRITTEN_NUMBER.finditer(question)]
    found += [Quantity(float(m.group(2)), m.group(), m.start(), m.end(), bool(m.group(1)))
              for m in _BARE_DECIMAL.finditer(question)]
    for m in _GLUED.finditer(question):
        suffix = m.group(5) or m.group(6) or m.group(7)
        if suffix.lower() != "s":  # '1990s'
            kind = "ordinal" if m.group(5) else "multiplier" if suffix.lower() == "x" else "number"
            found.append(Quantity(written_value(m), m.group() + suffix, m.start(), m.end(), bool(m.group(1)),
                                  suffix.lower() == "c", kind))
    for m in _WORD_NUMBER.finditer(question):
        if any(start <= m.start() and m.end() <= end for start, end in inside):
            continue
        tens, unit, single = (g.lower() if g else None for g in m.groups())
        value = _TENS[tens] + _UNITS.get(unit, 0) if tens else _UNITS.get(single, _MULTIPLES.get(single))
        kind = "multiplier" if m.group().lower() in MULTIPLIERS else _kind(question, m.end())
        found.append(Quantity(float(value), m.group(), m.start(), m.end(), False,
                              question[m.end():].lower().startswith(_HUNDREDTHS), kind))
    return sorted(found + fractions, key=lambda q: (q.start, q.end))


# Digits glued to a unit ('22kg', 'a 10K race', '8am', '60c'), a rate ('$0.50/mile') or an ordinal's suffix ('his
# 36th birthday'); groups as WRITTEN_NUMBER's, then the ordinal's suffix and the unit.
_GLUED = re.compile(r"(?<![\w./:,])(\$?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?()"
                    r"(?=(st|nd|rd|th)\b|(/[A-Za-z]+)|([A-Za-z]+)\b)", re.IGNORECASE)


# A decimal written without its leading zero: '$.5 each', 'a .25 chance'.
_BARE_DECIMAL = re.compile(r"(?<![\w.,])(\$?)(\.\d+)(?!\w|\.\d)")
# Glued units as a name says them: '60c' → cents, '6m' → meters; '10K race' → race, '8am' → the words before.
_GLUED_UNITS = {"c": "cents", "m": "meters", "k": "", "am": "", "pm": ""}


def _kind(question: str, end: int) -> str:
    return "multiplier" if re.match(r"\s*-?\s*times\b", question[end:], re.IGNORECASE) else "number"


_HUNDREDTHS = (" percent", " per cent", " cents", " cent ")
# A fraction word with the numerator that makes it one ('one-third', 'a quarter of', 'two thirds'); 'half' needs
# none. Without one, 'third' is an ordinal ('the third day') and 'a quarter' may be a coin.
_NUMERATOR = r"(?:a|an|one|two|three|four|five|six|seven|eight|nine)"
_FRACTION = re.compile(rf"(?:\b{_NUMERATOR}[\s-]+)?\b(half|halves|halved|halve)\b|"
                       rf"\b{_NUMERATOR}[\s-]+(thirds?|quarters?|fourths?|fifths?|sixths?|tenths?)\b"
                       rf"(?!\s+(?:day|time|week|month|year|place|grade|tree|floor|round|game|hour)s?\b)",
                       re.IGNORECASE)
_DENOMINATORS = {"half": 2, "halve": 2, "halves": 2, "halved": 2, "third": 3, "quarter": 4, "fourth": 4, "fifth": 5,
                 "sixth": 6, "tenth": 10}
_WRITTEN_FRACTION = re.compile(r"(?<![\d./:])(\d+)\s*/\s*(\d+)(?![\d./:])")


def fraction_words(question: str) -> list[Quantity]:
    """The denominators that fraction words state ('half' 2, 'a third' 3): a rationale's '/ 3' may read them."""
    out = []
    for m in _FRACTION.finditer(question):
        word = (m.group(1) or m.group(2)).lower()
        value = _DENOMINATORS.get(word) or _DENOMINATORS[word.rstrip("s")]
        out.append(Quantity(float(value), m.group(), m.start(), m.end(), False, kind="fraction"))
    return out


_RATIO = re.compile(r"(?<![\d.:])\d+(?:\s*:\s*\d+)+(?![\d:]|\.\d|\s*[ap]\.?m\b)", re.IGNORECASE)


def ratio_parts(question: str) -> list[Quantity]:
    """The parts of a ratio ('in the ratio 2:5', '4:3:7', '... of 5:7.'), each a quantity of its own, in a question
    that speaks of a ratio or a proportion; a clock time ('6:30 pm') is no ratio."""
    if not re.search(r"\b(?:ratio|proportion)s?\b", question, re.IGNORECASE):
        return []
    return [Quantity(float(part.group()), m.group(), m.start(), m.end(), False, kind="ratio")
            for m in _RATIO.finditer(question) for part in re.finditer(r"\d+", m.group())]


def written_fractions(question: str) -> list[Quantity]:
    """The numerator and denominator of each fraction written in digits ('1/4'), each a fraction's part."""
    return [Quantity(float(m.group(g)), m.group(), m.start(), m.end(), False, kind="fraction")
            for m in _WRITTEN_FRACTION.finditer(question) for g in (1, 2)]


_STOP = set("""a an the of to and or but her his their its my your our he she they it we i you him them me us
is are was were be been being has have had do does did will would can could should must shall might
that this these those which who whom what so then there than as also only just all both some any
about more each every another other many much""".split())
_PREPOSITIONS = {"in", "on", "at", "per", "from", "with", "by", "for", "into", "over", "after", "before"}
_CLAUSE_WORDS = {"and", "or", "but", "than", "because", "so", "which", "who", "that", "if", "when", "while", "since",
                 "as", "then", "to", "how", "what", "where", "why", "whose"}
_TIME_UNITS = {"second", "minute", "hour", "day", "week", "month", "year", "night", "morning", "evening", "game",
               "session", "trip", "visit", "class", "meal", "person"}
_RESERVED = set(keyword.kwlist) | set(dir(builtins)) | {"ans"}


def _words(text: str) -> list[str]:
    """Lower-case words without possessives or apostrophes ("Janet's" → 'janet', "didn't" → 'didnt')."""
    text = text.replace("’", "'")
    return [w.lower().removesuffix("'s").replace("'", "") for w in re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*", text)]


def _clause_after(text: str) -> list[str]:
    words = []
    for word in _words(re.split(r"[.,;:?!()\d$]", text, maxsplit=1)[0]):
        if word in _CLAUSE_WORDS or _WORD_NUMBER.fullmatch(word):
            break
        words.append(word)
    return words


def _clause_before(text: str) -> list[str]:
    words = _words(re.split(r"[.,;:?!()\d$]", text)[-1])
    cut = max((i + 1 for i, w in enumerate(words) if w in _CLAUSE_WORDS - {"to"}), default=0)
    return words[cut:]


def _content(words: list[str], limit: int = 3, from_end: bool = False) -> list[str]:
    """At most ``limit`` content words (the first, or the last ``from_end``), prepositions only between them;
    'a day' → 'per day'."""
    words = ["per" if w in {"a", "an", "each", "every", "per"} and following.rstrip("s") in _TIME_UNITS else w
             for w, following in zip(words, [*words[1:], ""])]
    kept: list[str] = []
    for word in reversed(words) if from_end else words:
        if word in _PREPOSITIONS:
            if not kept or kept[-1] not in _PREPOSITIONS:
                kept.append(word)
        elif word not in _STOP:
            kept.append(word)
            if sum(w not in _PREPOSITIONS for w in kept) == limit:
                break
    kept = kept[::-1] if from_end else kept
    while kept and kept[-1] in _PREPOSITIONS:
        kept.pop()
    while kept and kept[0] in _PREPOSITIONS - {"per"}:  # a leading 'per' names a rate: 'per_hour'
        kept.pop(0)
    return kept


def name_words(after: str, before: str, money: bool) -> list[str]:
    """Descriptive words for a number from the prose around it (see the module docstring)."""
    words = _content(_clause_after(after))
    if words[:1] in (["dollars"], ["cents"]) and (len(words) == 1 or words[1] == "per"):  # '76 dollars'
        money, words = True, words[1:]
    if words[:1] == ["per"] and money:  # '$12 an hour' → 'dollars_per_hour'
        words = ["dollars", *words]
    if words:
        return words
    before_words = _clause_before(before)
    while before_words and before_words[-1] in _STATING_VERBS:  # 'peanut butter costs $3' → peanut_butter
        before_words.pop()
    if not before_words:  # 'a tailored suit that costs three ...' → tailored_suit
        before_words = [w for w in _words(re.split(r"[.,;:?!()\d$]", before)[-1])
                        if w not in _STATING_VERBS and w not in _CLAUSE_WORDS]
    return _content(before_words, 2, from_end=True) + (["dollars"] if money else [])


# The sizes of units of time (an hour's 60 minutes, a week's 7 days), which a rationale writes as literals.
_TIME_SIZES = {60, 24, 7, 12, 52, 365, 3600, 1440}
# Words after a number too common to tell two quantities apart ('5 of ...', '3 and ...').
_FUNCTION_WORDS = {"of", "and", "or", "in", "on", "at", "to", "for", "from", "with", "by", "the", "a", "an", "is",
                   "are", "was", "were", "x", "times"}
_STATING_VERBS = set("""costs cost is are was were pays paid charges charged sells sold earns earned spends spent has
had makes made gets got weighs weighed needs takes took buys bought saves saved worth priced""".split())


_INSTRUCTIONS = set("""first then next last find add adding subtract subtracting multiply multiplying divide dividing
calculate compute figure out get number total so thus hence therefore now finally means meaning how many much we
perform performing determine""".split())
_TARGET = re.compile(r"\bto (?:find|get|calculate|figure out|know)\b(.*)$|^(.*?)\s+by\s+\w+ing\b", re.IGNORECASE)


def _line_subject(before: str) -> list[str]:
    """The words that say what a rationale line computes: the text before a ':' ('First find the cost of
    the electricity:'), the target of 'to find ...', else the last clause; instructions, numbers and units of
    an expression left out."""
    text = before.split(":")[0] if ":" in before and len(before.split(":")[0].split()) >= 2 else before
    if match := _TARGET.search(text):
        text = match.group(1) or match.group(2) or text
    text = re.split(r",\s+|;\s+|\b(?:so|because|since|which means|then)\b", text)[-1] or text
    words = [w for w in _words(re.sub(r"\S*\d\S*(?:\s+[a-z]+/[a-z]+)?", " ", text))
             if w not in _INSTRUCTIONS and w not in _STATING_VERBS and not _WORD_NUMBER.fullmatch(w)]
    return _content(words, 3)


def result_words(after: str, before: str, money: bool) -> tuple[list[str], list[str]]:
    """Words for a computed value from its rationale line (see the module docstring): the words after the
    result when they say more than a unit ('24 clips in May' → clips_in_may); else what the line says it
    computes, then that unit ('Meena bakes a total of 60 cookies' → meena_bakes_cookies). Returns the name's
    words and a longer form for when the name is taken."""
    noun = name_words(after, "", money) if re.search(r"[A-Za-z]", after) else (["dollars"] if money else [])
    if sum(w not in _PREPOSITIONS for w in noun) >= 2:
        return noun, noun
    purpose = re.match(r"\s*(?:more |less |extra )?(?:to|for) \w+ (?:the |a |an |on |in |for )?([A-Za-z' -]+)", after)
    if purpose and (what := _content(_clause_after(purpose.group(1)), 2)):  # '$4.50 to use almond butter'
        return [*what, *noun], [*what, *noun]
    subject = [w for w in _line_subject(before) if w not in noun and w not in _PREPOSITIONS]
    if not subject:
        return noun or name_words(after, before, money), noun
    return [*subject[:2], *noun], [*subject[:3], *noun]


class Names:
    """Unique, valid Python names for a program's variables."""

    def __init__(self):
        self.taken: set[str] = set()

    def new(self, words: list[str], fallback: str, before: str = "", longer: list[str] | None = None) -> str:
        """A name from ``words``; when taken, from ``longer``, else qualified by the first word of the clause
        before the number ('sharon_oranges'), else numbered ('oranges_2')."""
        base = "_".join(words)[:40].strip("_") or fallback
        if base in self.taken and longer:
            base = "_".join(longer)[:48].strip("_") or base
        qualifier = _content([w for w in _clause_before(before) if not _WORD_NUMBER.fullmatch(w)], 1)
        if base in self.taken and qualifier and qualifier[0] not in words:
            base = f"{qualifier[0]}_{base}"
        base = f"{base}_value" if base in _RESERVED else base
        name, n = base, 1
        while name in self.taken:
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        return name


# Programs -----------------------------------------------------------------------------------------------

def _literal(token: str) -> str:
    """'76.0' → '76'; other numbers as written."""
    return token.split(".")[0] if re.fullmatch(r"\d+\.0+", token) else token


def format_expression(tokens) -> str:
    """Tokens → 'a / 2', '(a + b) * c', '-3 + x'."""
    text = ""
    for i, token in enumerate(tokens):
        unary = token in "+-" and (i == 0 or tokens[i - 1] in OPERATORS | {"("})
        text += f" {token} " if token in OPERATORS and not unary else token
    return text


class _NothingTaken(dict):
    """``in_expression`` outside a pure sum or product: nothing read counts as taken."""

    def setdefault(self, key, default=None):
        return set()


_NOTHING_TAKEN = _NothingTaken()


def _neighbours(tokens: tuple[str, ...], i: int) -> tuple[str | None, str | None]:
    """The tokens before and after ``tokens[i]`` in a calculation (None at either end)."""
    return tokens[i - 1] if i else None, tokens[i + 1] if i + 1 < len(tokens) else None


def _scales(tokens: tuple[str, ...], i: int) -> bool:
    """Whether the number ``tokens[i]`` is a factor or a divisor of its calculation."""
    before, after = _neighbours(tokens, i)
    return "*" in (before, after) or before == "/"


class ProgramBuilder:
    """Writes a program statement by statement, naming the problem's quantities and each result."""

    def __init__(self, question: str):
        self.question = question
        self.quantities = question_quantities(question)
        self.names = Names()
        self.declared: dict[int, str] = {}  # quantity index → variable
        self.results: list[tuple[float | None, str]] = []  # (written value, variable), in order
        self.referenced: set[str] = set()  # results used in an expression so far
        self.statements: list[str] = []
        self.context: set[str] = set()  # content words of the rationale line being read
        self.line = ""  # the rationale line being read
        self.result: float | None = None  # the result its calculation writes
        self.reading: list[int] = []  # the quantities the calculation reads
        self.fractions = fraction_words(question)
        self.spoken: set[str] = set()  # content words of the whole rationale
        self.sources: dict[str, str] = {}  # variable → the clause or rationale line it is named from
        self.in_expression: dict[float, set[str]] = {}  # value → variables read for it in this pure sum

    def _quantity(self, index: int) -> str:
        if index not in self.declared:
            q = self.quantities[index]
            words = name_words(self._text_after(q), self.question[: q.start], q.money)
            if q.kind == "ratio":  # '4:5:6' → ratio_part_1, ratio_part_2, ratio_part_3
                same = [other for other in self.quantities if other.start == q.start and other.kind == "ratio"]
                words = ["ratio", "part", str(next(n for n, other in enumerate(same, 1) if other is q))]
            elif q.kind == "fraction":  # 'one-third' → third_denominator, '1/4' → fraction_numerator
                part = "numerator" if self._numerator(q) else "denominator"
                words = [_words(q.text)[-1].rstrip("s") if "/" not in q.text else "fraction", part]
            elif q.text.lower() in MULTIPLIERS:  # 'twice a week' → times_per_week
                words = ["times", *words] if words[:1] == ["per"] else ["times"]
            elif q.text.endswith("%"):
                words = [*words[:2], "percent"]
            self.declared[index] = self.names.new(words, f"quantity_{len(self.declared) + 1}", self.question[: q.start])
            start = max(self.question.rfind(mark, 0, q.start) for mark in (". ", "? ", "! ", ", "))
            end = min(((e for e in (self.question.find(mark, q.end) for mark in (". ", "?", ", ")) if e >= 0)),
                      default=len(self.question))
            self.sources[self.declared[index]] = self.question[start + 1: end + 1].strip()
        return self.declared[index]

    def _text_after(self, q: Quantity) -> str:
        """The text after a quantity, for its name: after an ordinal's suffix ('36th birthday'); a rate's '/' read
        as 'per' ('$6/hour' → dollars_per_hour); a glued unit spelled out ('60c' → cents, '6m' → meters)."""
        after = self.question[q.end:]
        if q.kind == "ordinal":
            return self.question[q.start + len(q.text):]
        if after.startswith("/"):
            return " per " + after[1:]
        if unit := re.match(r"[A-Za-z]+", after):
            return " " + _GLUED_UNITS.get(unit.group().lower(), unit.group()) + after[unit.end():]
        return after

    def _numerator(self, q: Quantity) -> bool:
        """Whether ``q`` is the first of a written fraction's two parts ('1/4': 1)."""
        same = [other for other in self.quantities if other.start == q.start and other.kind == "fraction"]
        return len(same) == 2 and same[0] is q

    def _candidates(self, tokens: tuple[str, ...], i: int) -> list[int]:
        """The question quantities the number ``tokens[i]`` may stand for: of its value, a multiplier only as a
        factor, a fraction's denominator only after '/', its numerator only before '/'."""
        value = float(tokens[i])
        before, after = _neighbours(tokens, i)
        out = []
        for k, q in enumerate(self.quantities):
            if q.value != value:
                continue
            if q.kind == "multiplier" and not _scales(tokens, i):
                continue
            if q.kind == "fraction":
                if (after != "/") if self._numerator(q) else (before != "/"):
                    continue
            out.append(k)
        ordinary = [k for k in out if self.quantities[k].kind != "ordinal"]
        return ordinary or out

    def _operand(self, tokens: tuple[str, ...], i: int) -> str:
        """The variable standing for the number ``tokens[i]`` (see the module docstring), or its literal; raises
        NoTrace where the rationale's context cannot tell which of equal values it reads."""
        value = float(tokens[i])
        if i and tokens[i - 1] == "/" and value == 100:
            return tokens[i]  # a percentage's denominator
        taken = self.in_expression.get(value, set())
        matches = [k for k in self._candidates(tokens, i) if self._shared(k, self.spoken) or k not in self.declared]
        results = [name for written, name in reversed(self.results) if written == value and name not in taken]
        if results and all(self.quantities[k].kind == "ordinal" for k in matches):
            matches = []  # an ordinal ('the 3rd day') only where the number would otherwise stay a literal
        fresh = [name for name in results if name not in self.referenced]
        latest = fresh[0] if fresh else results[0] if results else None
        free = [k for k in matches if self.declared.get(k) not in taken]  # equal numbers of one sum: different ones
        quantity = self._decide(self._by_wording(free, tokens, i)) if free else None
        if quantity is not None and latest:
            spoken = self._shared(quantity) > 0
            if not spoken and self._shared(quantity, self.spoken) == 0:
                quantity = None  # a result, not a number whose words the rationale never says (an irrelevant one)
            elif fresh and spoken or not fresh and not spoken and quantity not in self.declared:
                raise NoTrace(f"ambiguous number: {tokens[i]} is a result and a question quantity")
            elif not spoken or quantity in self.declared:
                quantity = None  # the line speaks of the result ('add this to'), or reads a result again
        if quantity is not None and self._sizes_a_unit(quantity):
            quantity, latest = None, fresh[0] if fresh else None
        if quantity is None and latest and not fresh and i and tokens[i - 1] == "/" and "average" in self.context:
            raise NoTrace(f"ambiguous number: {tokens[i]} is a result read again and a count to average over")
        if quantity is None and latest and not fresh and self._converts_unit(tokens, i):
            raise NoTrace(f"ambiguous number: {tokens[i]} is a result read again and the size of a unit the line "
                          "names")
        if quantity is not None:
            self._check_wording(quantity, tokens[i])
            self.reading.append(quantity)
            name = self._quantity(quantity)
        elif latest:
            self.referenced.add(latest)
            name = latest
        else:
            return self._hundredths(tokens, i)
        self.in_expression.setdefault(value, set()).add(name)
        return name

    def _converts_unit(self, tokens: tuple[str, ...], i: int) -> bool:
        """Whether the number, as a factor or divisor, may be the size of a unit of time the line names: '240 / 60 =
        4 hours' after '6 x 10 = 60 minutes' (already added into the 240) divides by an hour's 60 minutes, or by
        the 60 minutes of six dogs. A result just computed is what the next line reads ('12 pages every week, 12 *
        52 a year')."""
        return float(tokens[i]) in _TIME_SIZES and _scales(tokens, i) \
            and names_unit(float(tokens[i]), strip_annotations(self.line))

    def _sizes_a_unit(self, index: int) -> bool:
        """Whether the number is the size of a unit of time the line names rather than a sum of money or a
        percentage of equal value: '4 x 60' in a line about minutes is an hour's 60 minutes, not the '$60 per
        article' whose words the line never says."""
        q = self.quantities[index]
        return q.value in _TIME_SIZES and (q.money or q.hundredths) and self._shared(index) == 0 \
            and names_unit(q.value, strip_annotations(self.line)) \
            and not names_unit(q.value, sentence_of(self.question, q.start, q.end))

    def _decide(self, candidates: list[int]) -> int:
        """Of quantities of one value, the one whose neighbouring words the rationale line repeats most; raises
        NoTrace on a tie between quantities that differ (the program would rest on two values being equal)."""
        if len(candidates) == 1:
            return candidates[0]
        scores = {k: self._shared(k) for k in candidates}
        best = max(scores.values())
        top = [k for k in candidates if scores[k] == best]
        if len(top) > 1 and not self._one_role(top):
            raise NoTrace(f"ambiguous number: {format_number(self.quantities[top[0]].value)} stands "
                          f"{len(top)} times in the question")
        unused = [k for k in top if k not in self.declared]
        return (unused or top)[0]

    def _by_wording(self, candidates: list[int], tokens: tuple[str, ...], i: int) -> list[int]:
        """Of quantities of one value, those the line words alike: '3/4' is the question's '3/4', not its '4:11';
        the line's '3 more' is the question's '3 more', not its '3 dog toys'; in a rationale that speaks of a
        ratio's parts, a ratio's part, not '2 business partners', unless the line says 'partners'."""
        if len(candidates) < 2:
            return candidates
        value = float(tokens[i])
        fraction = {"".join(tokens[max(i - 2, 0): i + 1]), "".join(tokens[i: i + 3])}
        written = [k for k in candidates if self.quantities[k].kind == "fraction"
                   and re.sub(r"\s+", "", self.quantities[k].text) in fraction]
        if written and len(written) < len(candidates):
            return written
        said = {lemma(w) for w in mention_words(self.line, value) if w and w not in _FUNCTION_WORDS}
        alike = [k for k in candidates if lemma(self._noun(k)) in said]
        # Only where the others' clauses never say the word ('10 of these were rose bouquets and the remaining 10
        # bouquets' tells nothing), and the calculation reads the value once ('2*2 = 4 ... for 2 cakes').
        if alike and len(alike) < len(candidates) and tokens.count(tokens[i]) == 1 and not any(
                says(word, clause_of(self.question, self.quantities[k].start, self.quantities[k].end))
                for word in said for k in candidates if k not in alike):
            return alike
        parts = [k for k in candidates if self.quantities[k].kind == "ratio"]
        if parts and all(self.quantities[k].kind in ("ratio", "number") for k in candidates) \
                and len(parts) < len(candidates) and self.spoken & {"ratio", "part", "parts"} and not any(
                says(self._noun(k) or "-", self.line)
                for k in candidates if k not in parts):
            return parts
        return candidates

    def _noun(self, index: int) -> str:
        """The word after a quantity as the question writes it: '3 more' → 'more', '22kg' → 'kg', '$0.50/mile' →
        'mile', 'the 2nd day' → 'day'."""
        q = self.quantities[index]
        if q.kind == "ordinal":
            return word_after(self.question[q.start + len(q.text):])
        glued = re.search(r"[\d.,]/?([A-Za-z]+)$", q.text) if q.kind != "ratio" else None
        return glued.group(1).lower() if glued else word_after(self.question[q.end:])

    def _check_wording(self, index: int, token: str) -> None:
        """Raises NoTrace where the line gives the number a noun ('6 sides') that the sentence of the quantity it
        would read never says ('6 cookie cutters shaped like triangles'), and the line repeats none of that
        quantity's words: the two are different quantities that happen to be equal. A quantity without a noun of
        its own ('he sold 49.', 'Twenty of them') or a line whose result has the same value ('112 bracelets
        because 112 / 1 = 112') tells nothing."""
        q = self.quantities[index]
        nouns = [w for w in mention_words(self.line, q.value) if names_a_thing(w)]
        if not nouns or self._shared(index) > 0 or self.result == q.value or q.kind == "ordinal" \
                or not names_a_thing(self._noun(index)):
            return
        sentence = sentence_of(self.question, q.start, q.end)
        if not any(says(noun, sentence) for noun in nouns):
            raise NoTrace(f"ambiguous number: {token} is '{token} {nouns[0]}' in the rationale and "
                          f"'{q.text} {self._noun(index)}' in the question")

    def _check_pair(self) -> None:
        """Raises NoTrace where the calculation reads a 2 of the question ('2 bags of treats') in a line that
        names a pair of other things ('The crate and bed are $20.00 each so they will cost 2*20'), gives the 2
        no noun and repeats none of the quantity's words: the 2 counts the pair. A 2 without a noun of its own
        ('since there are two of them') may be that pair."""
        line = strip_annotations(self.line)
        words = {lemma(w) for w in _words(line)} - _STOP
        question = {lemma(w) for w in _words(self.question)} - _STOP
        pairs = [(a, b) for a, b in re.findall(r"\b([A-Za-z]+),? and (?:the |a |an |his |her |their )?([A-Za-z]+)\b",
                                               line) if {lemma(a), lemma(b)} <= question]
        for k in set(self.reading):
            q = self.quantities[k]
            if q.value != 2 or self._words_near(k) & words or any(mention_words(self.line, q.value)) \
                    or not names_a_thing(self._noun(k)):
                continue
            if pairs and not any({lemma(a), lemma(b)} & self._words_near(k) for a, b in pairs):
                raise NoTrace(f"ambiguous number: 2 of '{clause_of(self.question, q.start, q.end)}' read for "
                              f"'{pairs[0][0]} and {pairs[0][1]}'")

    def _words_near(self, index: int) -> set[str]:
        """The lemmas of the words up to 5 before and after a quantity, in its sentence."""
        q = self.quantities[index]
        before = re.split(r"[.?!;]\s", self.question[: q.start])[-1].split()[-5:]
        after = re.split(r"[.?!;]\s", self.question[q.end:])[0].split()[:5]
        return {lemma(w) for w in _words(" ".join([*before, *after]))} - _STOP

    def _one_role(self, candidates: list[int]) -> bool:
        """Whether equal quantities say the same thing ('2 packages ... 2 packages'): the same number and words."""
        said = {(self.quantities[k].text.lower(), tuple(_content(_clause_after(self.question[self.quantities[k].end:]),
                                                                  2))) for k in candidates}
        return len(said) == 1 and all(self.quantities[k].kind == "number" for k in candidates)

    def _hundredths(self, tokens: tuple[str, ...], i: int) -> str:
        """'500 * .40' reads '40 percent', '0.05 * 60' reads 'five cents'; any other number stays a literal."""
        value = float(tokens[i])
        hundredths = [k for k, q in enumerate(self.quantities) if q.hundredths and round(q.value / 100, 9) == value]
        if not hundredths:
            return _literal(tokens[i])
        share = f"{self._quantity(self._decide(hundredths))} / 100"
        return share if {tokens[i - 1] if i else "", tokens[i + 1] if i + 1 < len(tokens) else ""} == {"(", ")"} \
            else f"({share})"

    def _shared(self, k: int | Quantity, words: set[str] | None = None) -> int:
        """How many of a quantity's neighbouring words (and its own, for 'third') the rationale line (or
        ``words``) repeats."""
        q = self.quantities[k] if isinstance(k, int) else k
        before = re.split(r"[.?!;]\s", self.question[: q.start])[-1].split()[-5:]
        after = re.split(r"[.?!;]\s", self.question[q.end:])[0].split()[:5]
        words = self.context if words is None else words
        return len(set(_words(" ".join([*before, q.text, *after]))) - _STOP & words)

    def expression(self, tokens: tuple[str, ...]) -> str:
        # Equal numbers of one pure sum or product ('10 + 15 + 6 + 5 + 10') read different places: their order
        # does not change the meaning. Elsewhere a place may be read twice ('12 * 12').
        commutative = len({t for t in tokens if t in OPERATORS}) == 1 and ("+" in tokens or "*" in tokens) \
            and "(" not in tokens
        self.in_expression = {} if commutative else _NOTHING_TAKEN
        return format_expression([self._operand(tokens, i) if t[0].isdigit() else t for i, t in enumerate(tokens)])

    def assign(self, calculation: Calculation, line: str = "") -> str:
        """``<name from the calculation's frame> = <expression>`` for a calculation of the rationale line ``line``;
        returns the name."""
        self.line, self.result, self.reading = line, calculation.result, []
        before, after, money = frame(calculation)
        self.context = set(_words(f"{calculation.before} {calculation.after}")) - _STOP
        expression = self.expression(calculation.tokens)  # names the quantities it uses first
        self._check_pair()
        words, longer = result_words(after, before, money)
        name = self.names.new(words, f"step_{len(self.results) + 1}", before, longer)
        self.statements.append(f"{name} = {expression}")
        self.sources[name] = f"{calculation.before} {calculation.after}".strip()
        self.results.append((calculation.result, name))
        return name

    def check_relations(self) -> None:
        """Raises NoTrace where the program never reads a multiplier or a fraction ('twice', 'one-third') but
        reads a quantity of equal value ('2 hours', '3 people'): which of the two the rationale meant is a guess."""
        for k, q in enumerate(self.quantities):
            if q.kind in ("multiplier", "fraction", "ratio") and k not in self.declared:
                if other := next((self.quantities[j] for j in self.declared if self.quantities[j].value == q.value
                                  and self.quantities[j].kind != q.kind), None):
                    raise NoTrace(f"ambiguous number: {format_number(q.value)} is '{q.text}' and '{other.text}'")

    def check_steps(self, answer: str) -> None:
        """Raises NoTrace where a step's result never reaches ``answer``: the rationale went on from it in prose
        (which bucket held 13 ounces, which fruit is cheaper), so the program's arithmetic is hand-picked."""
        needed = {answer}
        for statement in reversed(self.statements):
            name, expression = statement.split(" = ", 1)
            if name in needed:
                needed |= set(re.findall(r"[A-Za-z_]\w*", expression))
            else:
                raise NoTrace(f"a step the answer never reads: {name}")

    def program(self, answer: str) -> str:
        given = [f"{self.declared[i]} = {format_number(self.quantities[i].value)}" for i in sorted(self.declared)]
        return "\n".join([*given, *self.statements, f"ans = {answer}"])


def rationale_program(question: str, rationale: str, gold: float) -> str:
    """A named-variable program from a rationale's calculations, ending at the last result equal to ``gold``."""
    builder, answer = rationale_builder(question, rationale, gold)
    return builder.program(answer)


def rationale_builder(question: str, rationale: str, gold: float) -> tuple[ProgramBuilder, str]:
    """The builder of :func:`rationale_program` and its answer expression: which question quantity each
    variable reads (``builder.declared``) is what ``kpdd augment`` changes."""
    calculations = [(c, line) for line in rationale_lines(rationale) for c in line_calculations(line)]
    readable = [(c, line) for c, line in calculations if c.tokens]
    if not readable:
        raise NoTrace("unreadable calculation" if calculations else "no calculator annotation")
    hits = [i for i, (c, _) in enumerate(readable) if is_correct(c.result, gold)]
    if not hits:
        raise NoTrace("no calculation result equals gold")
    builder = ProgramBuilder(question)
    builder.spoken = set(_words(rationale)) - _STOP
    for calculation, line in readable[: hits[-1] + 1]:
        name = builder.assign(calculation, line)
    builder.check_relations()
    builder.check_steps(name)
    return builder, name


def solution_reads(question: str, gold: float, rationale: str | None = None, equation: str | None = None) -> set[int]:
    """Indices of the question quantities the gold solution reads: those its program declares; for a rationale
    with no program, those whose value the rationale writes."""
    try:
        if rationale:
            return set(rationale_builder(question, rationale, gold)[0].declared)
        if equation:
            return set(equation_builder(question, equation, gold)[0].declared)
    except NoTrace:
        pass
    written = {written_value(m) for m in WRITTEN_NUMBER.finditer(rationale or equation or "")}
    return {i for i, q in enumerate(question_quantities(question)) if q.value in written}


_REMAINDER = re.compile(r"=\s*(\d+)\s*r\s*(\d+)\s*$")


def equation_tokens(equation: str, answer: float | None = None) -> tuple[str, ...]:
    """SVAMP '( 76.0 - 25.0 )', MultiArith 'X=((32.0+42.0)-35.0)', ASDiv '7+2=9' or '2 (dime)*10 (cent/dime)=20
    (cent)' → the expression's tokens (of the last statement, when ';' separates several). ASDiv's division
    with remainder '47/6=7 r5' becomes '47 // 6' or '47 % 6', whichever ``answer`` asks for."""
    statement = re.sub(r"\(\s*[A-Za-z][A-Za-z/ ]*\)", "", equation).split(";")[-1].strip()
    remainder = _REMAINDER.search(statement)
    parts = [p for p in statement.split("=") if re.search(r"\d", p)]
    expression = next((p for p in parts if re.search(r"\d\s*\)*\s*[-+*/]", p)), parts[0] if parts else "")
    tokens = normalise_expression(expression)
    if not tokens:
        raise NoTrace("unreadable equation")
    while tokens[0] == "(" and tokens[-1] == ")" and balanced(tokens[1:-1]):
        tokens = tokens[1:-1]
    if remainder and tokens.count("/") == 1:
        operator = "%" if answer is not None and answer == float(remainder.group(2)) else "//"
        tokens = tuple(operator if t == "/" else t for t in tokens)
    return tokens


def equation_program(question: str, equation: str, answer: float | None = None) -> str:
    builder, expression = equation_builder(question, equation, answer)
    return builder.program(expression)


def equation_builder(question: str, equation: str, answer: float | None = None) -> tuple[ProgramBuilder, str]:
    """The builder of :func:`equation_program` and its answer expression (see :func:`rationale_builder`)."""
    builder = ProgramBuilder(question)
    return builder, builder.expression(equation_tokens(equation, answer))


def equation_reasoning(equation: str, answer: float) -> str:
    """'( 76.0 - 25.0 )' with answer 51 → '76 - 25 = 51'; '47/6=7 r5' with answer 5 → '47 % 6 = 5'."""
    tokens = [_literal(t) if t[0].isdigit() else t for t in equation_tokens(equation, answer)]
    return f"{format_expression(tokens)} = {format_number(answer)}"
