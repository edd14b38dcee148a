"""Text heuristics of the gold teacher: GSM8K rationales and benchmark equations → stage outputs.

Deterministic string work only; nothing here is executed (the teacher verifies programs in the sandbox).
``HEURISTICS`` names this version in every trace's meta: bump it when any output changes.

- **Numbers as text** (:func:`format_number`): integers without ``.0``; other values with at most 6 decimals.
- **Reasoning** (:func:`strip_annotations`): the rationale with its ``<<a*b=c>>`` calculator annotations cut out.
- **Calculations** (:func:`line_calculations`): per rationale line, every annotation ``<<expr=result>>``; a line
  without annotations offers its plain arithmetic instead (``90-24 = 66``, ``45 sticks / 90 sticks * 100% = 50%``,
  unit words dropped). Expressions become Python arithmetic: ``x``/``×`` → ``*``, ``÷`` → ``/``, ``^`` → ``**``,
  ``$`` and thousands separators dropped, ``n%`` → ``(n/100)`` (plain ``n`` when the result is a percentage
  too), ``2(3)`` → ``2*(3)``, ``1 1/2`` → ``(1+1/2)``, leading zeros dropped. A calculation's *frame* is the
  text before its expression and the words after its result; a result with no words after it that the line
  states earlier ('He eats 32 from the large pizzas because 2 x 16 = 32') is framed at that earlier mention.
- **Quantities** (:func:`question_quantities`): the problem's digits (``$1,200``, ``80%``, ``2.5``) and number
  words (``three``, ``twenty-five``, ``twice``, ``dozen``); parts of fractions, times and ordinals are skipped.
- **Names** (:func:`name_words`): snake_case from the words after a number up to the end of its clause (articles,
  pronouns and auxiliaries dropped, at most 3 content words, prepositions only between them, 'a'/'each'/'every'
  before a time unit read as 'per': ``duck_eggs_per_day``; money per unit: ``dollars_per_hour``); when nothing
  follows, the last 2 content words before it (plus ``dollars`` for money). Percentages end in ``_percent``;
  'twice'/'triple' are ``times``. A name already taken is qualified by the word before the number
  (``sharon_oranges``), else numbered (``oranges_2``); keywords and builtins get ``_value``.
- **Programs** (:func:`rationale_program`): the problem's quantities as named variables (only those used, in the
  problem's order), then one assignment per calculation up to the last one whose written result equals the gold
  answer, named from its frame, then ``ans = <that variable>``. A number in an expression becomes a variable of
  equal value: a quantity not used yet, else the latest result, else a used quantity; ``twice`` only as a factor
  of a product; ``/ 100`` stays literal (a percentage); any other number stays a literal (60 minutes, 52 weeks).
  Equations (SVAMP, ASDiv, MultiArith) become the quantities plus ``ans = <equation>`` (:func:`equation_program`;
  ASDiv's '47/6=7 r5' becomes ``//`` or ``%``, whichever the answer is).
- **Core question and key points** (:func:`core_question_and_key_points`, :func:`split_facts`): see there.
- **Sub-questions** (:func:`sub_question`): the question a rationale line answers, built from its last
  calculation's frame. 'find X:' / 'to find how much X' lines ask for X; 'Let x be ...' is 'Define a variable.',
  a line with an unknown ('3x + 5 = 20') 'Write an equation.'. Otherwise the clause before the result is
  inverted around its verb: 'Janet sells 9 duck eggs a day' → 'How many duck eggs does Janet sell a day?';
  money → 'How much ...', 'is N years old' → 'How old is ...', 'The total cost is $5' → 'How much is the total
  cost?', 'The number of pens is 54' → 'How many pens are there?', 'There are 84 pages left' → 'How many pages
  are there left?'. Tense and number pick do/does/did; verbs are reduced to their base form by suffix rules
  and a list of irregular pasts.
- **Sub-answers** (:func:`sub_answer`): the line without annotations, made to end with its result.
"""

from __future__ import annotations

import builtins
import keyword
import re
from dataclasses import dataclass

from kpdd.eval.answers import is_correct, parse_number

HEURISTICS = "gold-heuristics/1"


class NoTrace(Exception):
    """Why a question yields no trace; the message is the short, countable reason."""


def format_number(value: float) -> str:
    """72.0 → '72', 0.5 → '0.5', 1/3 → '0.333333' (a number only, as the answer fields ask)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


_ANNOTATION = re.compile(r"<<([^<>]*)=([^<>=]*)>>")
_ANNOTATION_ANY = re.compile(r"<<[^<>]*>>")


def strip_annotations(text: str) -> str:
    """'48/2 = <<48/2=24>>24 clips' → '48/2 = 24 clips'."""
    return _ANNOTATION_ANY.sub("", text)


def rationale_lines(rationale: str) -> list[str]:
    return [line.strip() for line in rationale.split("\n") if line.strip()]


# Calculations -------------------------------------------------------------------------------------------

_OPERATORS = {"+", "-", "*", "/", "**", "//", "%"}
_TOKEN = re.compile(r"\d+(?:\.\d+)?|\.\d+|\*\*|//|[-+*/()]")
_DIGITS = re.compile(r"(?<![\w./:,])(\$?)(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(%?)(?![\w/:]|[.,]\d)")
_RESULT_SHOWN = re.compile(r"\s*(-?\d[\d,]*(?:\.\d+)?|-?\.\d+)(%?)")
_TIMES = re.compile(r"(?<=[\d)])\s*[xX×]\s*(?=[\d($.])")
# An expression in prose: numbers (each may carry '/unit' and up to 3 unit words) joined by operators.
# Possessive quantifiers keep long sums from backtracking exponentially.
_TERM = r"\(*+\s*+(?:\$?\d[\d,]*+(?:\.\d+)?+%?+|\$?\.\d+%?+)(?:/[A-Za-z]+)?+(?:\s*\))*+(?:\s+[A-Za-z']+){0,3}+"
_EXPRESSION = rf"{_TERM}(?:\s*+(?:[-+*/÷^–−]|(?=\())\s*+{_TERM})++"
_PLAIN_MATH = re.compile(rf"({_EXPRESSION})\s*=\s*(\$?-?\d[\d,]*(?:\.\d+)?(?:/\d+)?%?)")
_TRAILING_EXPRESSION = re.compile(rf"[\s=$]*(?:{_EXPRESSION})?[\s=$]*$")


@dataclass(frozen=True)
class Calculation:
    """One calculation of a rationale line: Python tokens, the written result, and its frame in the prose."""

    tokens: tuple[str, ...]  # normalised expression; () when it is not plain arithmetic
    result: float | None  # the result as written (possibly rounded by the author)
    before: str  # the line's text before the expression
    after: str  # the line's text after the result
    money: bool  # '$' before the result


def normalise_expression(text: str, percent_result: bool = False) -> tuple[str, ...]:
    """Arithmetic as people write it → Python tokens (see the module docstring); () when unreadable."""
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text).replace("$", "")
    text = _TIMES.sub("*", text.translate(str.maketrans({"÷": "/", "–": "-", "−": "-"}))).replace("^", "**")
    text = re.sub(r"(\d+(?:\.\d+)?)\s*%", r"\1" if percent_result else r"(\1/100)", text)
    text = re.sub(r"\b(\d+)\s+(\d+)\s*/\s*(\d+)\b", r"(\1+\2/\3)", text)  # a mixed number: 1 1/2
    if re.search(r"[\d.]\s+[\d.]", text):
        return ()  # two numbers with no operator between them
    compact = re.sub(r"\s+", "", text)
    tokens = _TOKEN.findall(compact)
    if not tokens or "".join(tokens) != compact or not _balanced(tokens) or tokens[0] in "*/)" \
            or tokens[-1] in _OPERATORS:
        return ()
    out: list[str] = []
    for token in tokens:
        number = token[0].isdigit() or token[0] == "."
        if out and (token == "(" and (out[-1] == ")" or out[-1][0] in "0123456789.") or number and out[-1] == ")"):
            out.append("*")  # implicit multiplication
        out.append((token.lstrip("0") or "0") if token.isdigit() else "0" + token if token[0] == "." else token)
    return tuple(out)


def _balanced(tokens) -> bool:
    depth = 0
    for token in tokens:
        depth += (token == "(") - (token == ")")
        if depth < 0:
            return False
    return depth == 0


def _calculation(expression: str, result: str, percent: bool, before: str, after: str, money: bool) -> Calculation:
    before = _TRAILING_EXPRESSION.sub("", before)
    return Calculation(normalise_expression(re.sub(r"/[A-Za-z]+|[A-Za-z']+", "", expression), percent),
                       parse_number(result), before.strip(), strip_annotations(after).strip(), money)


def line_calculations(line: str) -> list[Calculation]:
    """The calculations of one rationale line: its annotations, else its plain ``a op b = c`` arithmetic."""
    line = _TIMES.sub(" * ", line)
    if "<<" not in line:
        return [_calculation(m.group(1), m.group(2).lstrip("$").rstrip("%"), m.group(2).endswith("%"),
                             line[: m.start()], line[m.end():], m.group(2).startswith("$"))
                for m in _PLAIN_MATH.finditer(line)]
    calculations = []
    for match in _ANNOTATION.finditer(line):
        head = strip_annotations(line[: match.start()]).rstrip()
        shown = _RESULT_SHOWN.match(line, match.end())
        percent = bool(shown and shown.group(2)) or match.group(2).strip().endswith("%")
        calculations.append(_calculation(match.group(1), match.group(2), percent, head,
                                         line[shown.end() if shown else match.end():], head.endswith("$")))
    return calculations


def frame(calculation: Calculation) -> tuple[str, str, bool]:
    """(text before, text after, money) of a calculation's result, moved to an earlier mention of the result
    when nothing follows it: 'She made $90 in profit because 270 - 180 = 90' → ('She made', ' in profit
    because', True)."""
    if not re.search(r"[A-Za-z]", calculation.after) and calculation.result is not None:
        mentions = [m for m in _DIGITS.finditer(calculation.before) if _digits_value(m) == calculation.result
                    and re.search(r"[A-Za-z]", calculation.before[: m.start()])]
        if mentions:
            m = mentions[-1]
            return calculation.before[: m.start()], calculation.before[m.end():], calculation.money or bool(m.group(1))
    return calculation.before, calculation.after, calculation.money


# Quantities and names -----------------------------------------------------------------------------------

_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                     "fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_MULTIPLES = {"hundred": 100, "thousand": 1000, "dozen": 12, "twice": 2, "double": 2, "triple": 3, "thrice": 3}
_MULTIPLIERS = {"twice", "double", "triple", "thrice"}
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


def _digits_value(match: re.Match) -> float:
    return float(match.group(2).replace(",", "") + (match.group(3) or ""))


def question_quantities(question: str) -> list[Quantity]:
    """Digits and number words of a problem, in order of appearance."""
    found = [Quantity(_digits_value(m), m.group(), m.start(), m.end(), bool(m.group(1)))
             for m in _DIGITS.finditer(question)]
    for m in _WORD_NUMBER.finditer(question):
        tens, unit, single = (g.lower() if g else None for g in m.groups())
        value = _TENS[tens] + _UNITS.get(unit, 0) if tens else _UNITS.get(single, _MULTIPLES.get(single))
        found.append(Quantity(float(value), m.group(), m.start(), m.end(), False))
    return sorted(found, key=lambda q: q.start)


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
    return words or _content(_clause_before(before), 2, from_end=True) + (["dollars"] if money else [])


class Names:
    """Unique, valid Python names for a program's variables."""

    def __init__(self):
        self.taken: set[str] = set()

    def new(self, words: list[str], fallback: str, before: str = "") -> str:
        """A name from ``words``; when taken, qualified by the first word of the clause before the number
        ('sharon_oranges'), else numbered ('oranges_2')."""
        base = "_".join(words)[:40].strip("_") or fallback
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
        unary = token in "+-" and (i == 0 or tokens[i - 1] in _OPERATORS | {"("})
        text += f" {token} " if token in _OPERATORS and not unary else token
    return text


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

    def _quantity(self, index: int) -> str:
        if index not in self.declared:
            q = self.quantities[index]
            words = name_words(self.question[q.end:], self.question[: q.start], q.money)
            if q.text.lower() in _MULTIPLIERS:  # 'twice a week' → times_per_week
                words = ["times", *words] if words[:1] == ["per"] else ["times"]
            elif q.text.endswith("%"):
                words = [*words[:2], "percent"]
            self.declared[index] = self.names.new(words, f"quantity_{len(self.declared) + 1}", self.question[: q.start])
        return self.declared[index]

    def _operand(self, tokens: tuple[str, ...], i: int) -> str:
        """The variable standing for the number ``tokens[i]`` (see the module docstring), or its literal."""
        value = float(tokens[i])
        if i and tokens[i - 1] == "/" and value == 100:
            return tokens[i]  # a percentage's denominator
        neighbours = {tokens[i - 1] if i else None, tokens[i + 1] if i + 1 < len(tokens) else None}
        matches = [k for k, q in enumerate(self.quantities)
                   if q.value == value and (q.text.lower() not in _MULTIPLIERS or "*" in neighbours)]
        unused = [k for k in matches if k not in self.declared]
        results = [name for written, name in reversed(self.results) if written == value]
        latest = next((name for name in results if name not in self.referenced), results[0] if results else None)
        if unused or matches and not latest:
            return self._quantity((unused or matches)[0])
        if latest:
            self.referenced.add(latest)
        return latest or _literal(tokens[i])

    def expression(self, tokens: tuple[str, ...]) -> str:
        return format_expression([self._operand(tokens, i) if t[0].isdigit() else t for i, t in enumerate(tokens)])

    def assign(self, calculation: Calculation) -> str:
        """``<name from the calculation's frame> = <expression>``; returns the name."""
        before, after, money = frame(calculation)
        expression = self.expression(calculation.tokens)  # names the quantities it uses first
        name = self.names.new(name_words(after, before, money), f"step_{len(self.results) + 1}", before)
        self.statements.append(f"{name} = {expression}")
        self.results.append((calculation.result, name))
        return name

    def program(self, answer: str) -> str:
        given = [f"{self.declared[i]} = {format_number(self.quantities[i].value)}" for i in sorted(self.declared)]
        return "\n".join([*given, *self.statements, f"ans = {answer}"])


def rationale_program(question: str, rationale: str, gold: float) -> str:
    """A named-variable program from a rationale's calculations, ending at the last result equal to ``gold``."""
    calculations = [c for line in rationale_lines(rationale) for c in line_calculations(line)]
    readable = [c for c in calculations if c.tokens]
    if not readable:
        raise NoTrace("unreadable calculation" if calculations else "no calculator annotation")
    hits = [i for i, c in enumerate(readable) if is_correct(c.result, gold)]
    if not hits:
        raise NoTrace("no calculation result equals gold")
    builder = ProgramBuilder(question)
    for calculation in readable[: hits[-1] + 1]:
        name = builder.assign(calculation)
    return builder.program(name)


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
    while tokens[0] == "(" and tokens[-1] == ")" and _balanced(tokens[1:-1]):
        tokens = tokens[1:-1]
    if remainder and tokens.count("/") == 1:
        operator = "%" if answer is not None and answer == float(remainder.group(2)) else "//"
        tokens = tuple(operator if t == "/" else t for t in tokens)
    return tokens


def equation_program(question: str, equation: str, answer: float | None = None) -> str:
    builder = ProgramBuilder(question)
    return builder.program(builder.expression(equation_tokens(equation, answer)))


def equation_reasoning(equation: str, answer: float) -> str:
    """'( 76.0 - 25.0 )' with answer 51 → '76 - 25 = 51'; '47/6=7 r5' with answer 5 → '47 % 6 = 5'."""
    tokens = [_literal(t) if t[0].isdigit() else t for t in equation_tokens(equation, answer)]
    return f"{format_expression(tokens)} = {format_number(answer)}"


# Core question and key points ---------------------------------------------------------------------------

_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "mt", "no", "ave", "inc", "co", "ltd",
                  "p.m", "a.m", "i.e", "e.g", "lbs", "oz", "ft", "approx"}
_SENTENCE_END = re.compile(r"(?<=[.?!])[\"')]*\s+(?=[\"'(]?[A-Z0-9$])")
_ASKS = r"(?:how|what|which|who|whom|where|when|why|in how|by how|at what|for how|on what|calculate|find|" \
        r"determine|compute|work out)\b"
_LEADING_CONDITION = re.compile(
    r"^(?P<cond>(?:if|given that|assuming(?: that)?|suppose(?: that)?|supposing(?: that)?|when|after|once|now that)"
    rf"\s+\S[^?]*?)(?:,\s*|\.?\s+)(?:then\s+)?(?P<core>{_ASKS}[^?]*[?.]?)$", re.IGNORECASE)
_TRAILING_CONDITION = re.compile(
    rf"^(?P<core>{_ASKS}.*?),?\s+(?P<cond>(?:if|given that|assuming(?: that)?)\s[^?]+)(?P<end>[?.])$", re.IGNORECASE)
_HYPOTHETICAL = re.compile(r"^(?:if|given that|assuming(?: that)?|suppose(?: that)?|supposing(?: that)?)\s+",
                           re.IGNORECASE)
_NEW_SUBJECT = {"he", "she", "they", "it", "we", "i", "you", "his", "her", "their", "its", "the", "a", "an", "each",
                "every", "then", "there", "this", "that", "these", "those", "my", "our", "your", "today",
                "yesterday", "tomorrow", "later", "now", "for", "in", "on", "at", "after", "before", "during"}
_JOINER = re.compile(r"(,?\s+(?:and|but|while|whereas)\s+)")
_QUANTITY = re.compile(r"\d|\b(?:half|twice|double|triple|third|quarter|dozen)\b", re.IGNORECASE)


def split_sentences(text: str) -> list[str]:
    """Sentences of a problem; a period after 'Mr', 'p.m' or a lone initial does not end one."""
    text = " ".join(text.split())
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        last_word = text[start: match.start()].rstrip(".?!\"')").rsplit(" ", 1)[-1].lower()
        abbreviation = last_word in _ABBREVIATIONS or len(last_word) == 1 and last_word.isalpha()
        if text[match.start() - 1] == "." and abbreviation:
            continue
        sentences.append(text[start: match.start()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _as_fact(clause: str) -> str:
    """'if she sells 5 more' → 'She sells 5 more.'"""
    clause = _HYPOTHETICAL.sub("", clause.strip()).rstrip(" ,;")
    return _capitalised(clause) + ("" if clause.endswith((".", "!", "?")) else ".")


def split_facts(sentence: str) -> list[str]:
    """One fact per item: a sentence is split at ';', and at 'and'/'but'/'while' when both sides state a
    quantity and the right side starts a new clause ('..., and then she sold', '... and a small pizza has')."""
    facts = []
    for part in filter(str.strip, re.split(r";\s+", sentence)):
        pieces = _JOINER.split(part)  # [clause, joiner, clause, joiner, ...]
        current = pieces[0]
        for joiner, piece in zip(pieces[1::2], pieces[2::2]):
            words = piece.split()
            new_clause = len(words) >= 3 and len(current.split()) >= 3 and (
                words[0].lower() in _NEW_SUBJECT or words[0][0].isupper())
            if new_clause and _QUANTITY.search(current) and _QUANTITY.search(piece):
                facts.append(current)
                current = piece
            else:
                current += joiner + piece
        facts.append(current)
    return [_as_fact(f) for f in facts]


def core_question_and_key_points(question: str) -> tuple[str, list[str]]:
    """The problem's question sentence and the given facts.

    The core question is the last sentence with a '?' (else the last sentence). A leading condition ('If she
    sells 5 more, how many ...?') or a trailing one ('How many ... if the flock is 20 chickens?') is split off
    and becomes a key point stated as a fact ('She sells 5 more.'). The key points are the other sentences in
    order, each split by :func:`split_facts`, then that condition; a problem that states nothing else keeps
    its whole text as its one key point.
    """
    sentences = split_sentences(question)
    index = max((i for i, s in enumerate(sentences) if "?" in s), default=len(sentences) - 1)
    core, condition = sentences[index], None
    if match := _LEADING_CONDITION.match(core) or _TRAILING_CONDITION.match(core):
        core, condition = match.group("core").rstrip(" ,"), match.group("cond")
        end = match.groupdict().get("end") or "?"
        core = _capitalised(core if core.endswith(("?", ".")) else core + end)
    facts = [fact for i, s in enumerate(sentences) if i != index for fact in split_facts(s)]
    if condition:
        facts.append(_as_fact(condition))
    return core, facts or [" ".join(question.split())]


# Socratic sub-questions ---------------------------------------------------------------------------------

_IRREGULAR = dict(pair.split(":") for pair in """sold:sell made:make had:have spent:spend paid:pay bought:buy ate:eat
gave:give took:take got:get ran:run wrote:write left:leave drove:drive won:win lost:lose found:find kept:keep saw:see
went:go came:come sent:send built:build grew:grow drank:drink threw:throw caught:catch brought:bring thought:think
taught:teach sat:sit stood:stand held:hold fed:feed fell:fall flew:fly knew:know met:meet rode:ride said:say
slept:sleep spoke:speak swam:swim told:tell wore:wear dug:dig drew:draw broke:break chose:choose began:begin
became:become shot:shoot stole:steal fought:fight heard:hear meant:mean spun:spin lent:lend led:lead""".split())
_PARTICIPLES = re.compile(r"[a-z]+(?:ed|en)|" + "|".join(_IRREGULAR) + r"|been|done|gone|seen|eaten|given|taken")
_AUX = {"is", "are", "was", "were", "will", "would", "can", "could", "should", "must", "might", "may", "does", "do",
        "did", "has", "have", "had"}
_BE = {"is", "are", "was", "were"}
_BASE_VERBS = set("""cost weigh need have make get take pay spend earn sell buy eat use give receive save read run walk
drive work owe contain hold produce collect lose win sleep travel grow drink play score build bake cook plant pick
lay sell ride swim cover fill carry keep share charge raise remain""".split())
_PRONOUNS = {"he", "she", "they", "it", "we", "i", "you"}
_LOWER_FIRST = _PRONOUNS - {"i"} | {"the", "his", "her", "their", "its", "this", "that", "there", "a", "an", "each",
                                   "every", "our", "my", "your", "these", "those"}
_CONNECTIVES = re.compile(r"^(?:(?:so|thus|therefore|then|hence|now|finally|first|next|also|and|but|overall|in total|"
                          r"in all|altogether|that means|this means|which means|it means|whilst|while)\b,?\s*)+",
                          re.IGNORECASE)
# Where the clause before a result starts: after ';', ':', 'so', 'because', ..., after an opening subordinate clause
# ('Since she spent all the quarters, she paid'), or at a comma before a pronoun; other commas may sit in a list.
_LAST_CLAUSE = re.compile(r"[;:]\s+|\s+(?:so|because|since|which means|then)\s+|,\s+(?=(?:he|she|they|it|we|i|you|"
                          r"there|this|that|so|then|thus|therefore|hence|which|in total|altogether|overall|\w+ing)\b)",
                          re.IGNORECASE)
_OPENING_CLAUSE = re.compile(r"^(?:if|since|after|when|as|because|for|with|before|once|given|in|on|at|by|from)\b"
                             r"[^,]*,\s+",
                             re.IGNORECASE)
_NO_SUBJECT = re.compile(r"^(?:(?:that|this|which|it)(?:'s| is)?|\w+ing\b.*|(?:add|subtract|multiply|divide|find|calculate|"
                         r"compute|figure|determine|set|cross|sum|combine|convert|take)\b.*)$", re.IGNORECASE)
_EMBEDDED = re.compile(r"\b(?:find|calculate|determine|figure out|compute|know)\s+(?:out\s+)?(.+?)\s*:", re.IGNORECASE)
_EMBEDDED_WH = re.compile(r"(how many(?: (?-i:[a-z]+))?|how (?:much|long|far|old)(?: extra| more| less)?|what)\s+(.*)",
                          re.IGNORECASE)
_NOUN_STOP = {"in", "on", "at", "per", "for", "from", "to", "with", "by", "a", "an", "each", "every", "this", "that",
              "left", "altogether", "total", "more", "less", "than", "after", "before", "if", "when", "because", "so",
              "and", "which", "who", "since", "as", "now", "then", "today", "together", "over", "into", "remaining",
              "is", "are", "was", "were", "will"}
_CLAUSE_END = re.compile(r"\s*(?:[,;:(]|\.(?:\s|$)|\b(?:because|since|so|which|as|and|but|if)\b)")


def _lemma(verb: str) -> str:
    """'sells' → 'sell', 'carried' → 'carry', 'baked' → 'bake', 'sold' → 'sell' (suffix rules, no lexicon)."""
    if verb in _IRREGULAR or verb in {"has", "does", "goes"}:
        return _IRREGULAR.get(verb) or {"has": "have", "does": "do", "goes": "go"}[verb]
    if verb.endswith(("ied", "ies")):
        return verb[:-3] + "y"
    if verb.endswith("ed"):
        stem = verb[:-2]
        if re.search(r"(pp|tt|gg|nn|mm|bb|rr)$", stem):
            return stem[:-1]
        if re.search(r"[vcuz]$|ng$", stem) or len(stem) <= 3 and re.search(r"(?:^|[^aeiou])[aeiou][^aeiouwxy]$", stem) \
                or len(stem) == 4 and re.search(r"[^aeiou][aeiou]r$", stem):
            return stem + "e"
        return stem
    if re.search(r"(ss|sh|ch|x|z|o)es$", verb):
        return verb[:-2]
    return verb[:-1] if verb.endswith("s") else verb


def _verb_index(words: list[str]) -> int | None:
    """The verb of a short declarative clause: right after a pronoun; else the first auxiliary; else the first
    word that looks like a verb (a known past form, '-ed', or '-s' after a noun)."""
    lowered = [w.lower() for w in words]
    if len(words) >= 2 and lowered[0] in _PRONOUNS | {"there"}:
        return 1
    aux = next((i for i, w in enumerate(lowered[1:], 1) if w in _AUX), None)
    if aux is not None:
        return aux
    for i, word in enumerate(lowered[1:], 1):
        if word in _IRREGULAR or re.fullmatch(r"[a-z]{2,}ed", word) or re.fullmatch(r"[a-z]{2,}[^su]s", word) \
                and lowered[i - 1] not in _LOWER_FIRST and not words[i][0].isupper():
            return i
    return next((i for i, w in enumerate(lowered[1:], 1) if w in _BASE_VERBS), None)


def _phrase(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _subject(words: list[str]) -> str:
    text = " ".join(words)
    return text[:1].lower() + text[1:] if words and words[0].lower() in _LOWER_FIRST else text


def _noun_phrase(after: str) -> tuple[str, str]:
    """'duck eggs a day at the market.' → ('duck eggs', 'a day at the market')."""
    words = _CLAUSE_END.split(after.strip(), maxsplit=1)[0].strip().rstrip(".!?").split()
    cut = next((i for i, w in enumerate(words) if w.lower() in _NOUN_STOP or not re.fullmatch(r"[A-Za-z'-]+", w)
                and not (i and words[i - 1] == "of" and _DIGITS.fullmatch(w))), len(words))  # 'sets of 12 cans'
    while cut and words[cut - 1] == "of":
        cut -= 1
    return " ".join(words[:cut]), " ".join(words[cut:])


def _inverted(clause: list[str], wh: str, rest: str) -> str | None:
    """A wh-question from a declarative clause: ('Janet sells', 'how many duck eggs', 'a day') → 'How many duck
    eggs does Janet sell a day?'; None when the clause has no verb."""
    v = _verb_index(clause)
    if v is None:
        return None
    subject, verb, tail = _subject(clause[:v]), clause[v].lower(), " ".join(clause[v + 1:])
    perfect = verb in {"has", "have", "had"} and tail and _PARTICIPLES.fullmatch(tail.split()[0])
    if verb in _AUX - {"has", "have", "had"} or perfect:
        body = _phrase(verb, subject, tail, rest)  # 'should she read', 'has he won'
    else:
        aux = "did" if verb in _IRREGULAR or verb.endswith("ed") else (
            "does" if verb.endswith("s") and subject.lower() not in {"they", "we", "you", "i"} else "do")
        body = _phrase(aux, subject, _lemma(verb), tail, rest)
    return f"{_capitalised(wh)} {body}?"


def _embedded_question(before: str, money: bool) -> str | None:
    """'First find how much extra Jessica pays each month:' → 'How much extra does Jessica pay each month?'."""
    match = _EMBEDDED.search(before)
    if not match:
        return None
    target = re.split(r"\.\s|\s+by\s+(?=\w+ing\b)", match.group(1))[0]
    if (wh := _EMBEDDED_WH.match(target)) and (question := _inverted(wh.group(2).split(), wh.group(1).lower(), "")):
        return question
    if number_of := re.match(r"the (?:total )?number of (.+)", target, re.IGNORECASE):
        return f"How many {number_of.group(1)} are there?"
    return f"{'How much' if money else 'What'} is {target}?"


def _last_number_frame(line: str) -> tuple[str, str, bool] | None:
    numbers = list(_DIGITS.finditer(line))
    if not numbers:
        return None
    return line[: numbers[-1].start()], line[numbers[-1].end():], bool(numbers[-1].group(1))


def _be_question(subject: list[str], be: str, noun: str, money: bool, rest: str) -> str:
    """A question about the subject of 'X is N ...': 'The number of blue pens is 54' → 'How many blue pens are
    there?', 'The total cost is $5' → 'How much is the total cost?', 'Tim is 30 years old' → 'How old is Tim?'."""
    text = _subject(subject)
    if (counted := re.fullmatch(r"(?:the )?(?:total )?number of ([^,]+)", text, re.IGNORECASE)) \
            and not re.search(r"\b(?:that|which|who)\b", counted.group(1)):
        return f"How many {counted.group(1)} {'were' if be in {'was', 'were'} else 'are'} there?"
    if noun.lower() == "years old":
        return f"How old {be} {text}?"
    if noun and not money:
        return f"How many {noun} {be} {_phrase(text, rest)}?"
    return f"{'How much' if money else 'What'} {be} {_phrase(text, rest)}?"


_DEFINITION = re.compile(r"^(?:if we |we )?let\b", re.IGNORECASE)
_UNKNOWN = re.compile(r"(?:\d|\b)[a-zA-Z]\b\s*[-+*/=)]|[-+*/=(]\s*\d*[a-zA-Z]\b")


def sub_question(line: str) -> str:
    """The question a rationale line answers (see the module docstring, 'Sub-questions')."""
    plain = _TIMES.sub(" * ", strip_annotations(line))
    if _DEFINITION.match(plain):
        return "Define a variable."
    if _UNKNOWN.search(plain):
        return "Write an equation."
    calculations = line_calculations(line)
    framed = frame(calculations[-1]) if calculations else _last_number_frame(plain)
    if framed is None:
        return "What do we know so far?"
    before, after, money = framed
    if embedded := _embedded_question(before, money):
        return embedded
    clause = _CONNECTIVES.sub("", _OPENING_CLAUSE.sub("", _LAST_CLAUSE.split(before.strip())[-1]))
    clause = re.sub(r"\s+(?:a total of|a total|total of|in total)$", "", clause)
    clause = [] if _NO_SUBJECT.match(clause) else clause.split()
    noun, rest = _noun_phrase(after)
    if money or noun.lower() in {"dollars", "cents", "euros", "bucks"}:
        money, noun = True, ""
    if clause and clause[0].lower() == "there" and noun:
        return f"How many {_phrase(noun, clause[1].lower() if len(clause) > 1 else 'are', 'there', rest)}?"
    if len(clause) >= 2 and clause[-1].lower() in _BE:
        return _be_question(clause[:-1], clause[-1].lower(), noun, money, rest)
    wh = "how much" if money else "how old" if noun.lower() == "years old" else _phrase("how many", noun)
    if not clause:
        return f"{_capitalised(wh)} {'is it' if money else 'are there' if noun else 'is the result'}?"
    return _inverted(clause, wh, rest) or f"{_capitalised(wh)} is {_phrase(_subject(clause), rest)}?"


def sub_answer(line: str, final: float | None = None) -> str:
    """A rationale line as the sub-solver's answer: annotations cut out, ending with the line's result (', so
    the result is N.' is added when its last number is not). For the last line, ``final`` (the gold answer)
    is that result when the line states it: 'There are 33 ounces in those 3 boxes' ends ', so the result is 33.'"""
    answer = strip_annotations(line).strip()
    calculations = line_calculations(line)
    result = calculations[-1].result if calculations else None
    if final is not None and any(_digits_value(m) == final for m in _DIGITS.finditer(answer)):
        result = final
    if result is not None and not is_correct(answer, result):
        answer = f"{answer.rstrip('. ')}, so the result is {format_number(result)}."
    return answer
