"""Question language of the gold teacher: core question, key points, Socratic sub-questions and sub-answers.

Deterministic string work only, from a GSM8K problem and its rationale lines. The calculations come from
:mod:`kpdd.compile.gold.calculations`, whose ``HEURISTICS`` version covers this module.

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

import re
from collections.abc import Collection

from kpdd.compile.gold import checks
from kpdd.compile.gold.calculations import (
    TIMES_SIGN,
    WRITTEN_NUMBER,
    format_number,
    frame,
    line_calculations,
    strip_annotations,
    written_value,
)
from kpdd.compile.gold.programs import MULTIPLIERS, question_quantities
from kpdd.eval.answers import is_correct

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


def _verb_form(word: str) -> str | None:
    """'past' ('sold', 'baked'), 'present' ('eats', 'has') or None (not a finite verb form we can tell)."""
    word = word.lower()
    if word in _IRREGULAR or re.fullmatch(r"[a-z]{2,}ed", word) or word in {"was", "were", "had", "did"}:
        return "past"
    if word in {"is", "has", "does"} or re.fullmatch(r"[a-z]{2,}[^su]s", word):
        return "present"
    return None


def _states_quantity(text: str) -> bool:
    return bool(_QUANTITY.search(text) or question_quantities(text))


def _clauses(sentence: str) -> list[tuple[str, str]]:
    """The clauses of :func:`split_facts` before they are made facts, each with its words as they stand in the
    sentence (a clause given its subject's words lacks them there)."""
    facts = []
    for part in filter(str.strip, re.split(r";\s+", sentence)):
        pieces = _JOINER.split(part)  # [clause, joiner, clause, joiner, ...]
        current = verbatim = last = pieces[0]  # last: the latest clause joined, whose subject a verb goes on with
        for joiner, piece in zip(pieces[1::2], pieces[2::2]):
            words, before = piece.split(), current.split()
            names = joiner.strip() == "and" and before[-1][:1].isupper() and words[0][:1].isupper()  # 'Mike and Jo'
            new_clause = len(words) >= 3 and len(before) >= 3 and not names and (
                words[0].lower() in _NEW_SUBJECT or words[0][0].isupper())
            subject = last.split() if _verb_index(last.split()) is not None else before
            if new_clause and _QUANTITY.search(current) and _QUANTITY.search(piece):
                facts.append((current, verbatim))
                current = verbatim = last = piece
            elif len(words) >= 2 and _states_quantity(current) and _states_quantity(piece) \
                    and (verb := _verb_index(subject)) is not None and _verb_form(subject[verb]) \
                    and _verb_form(words[0]) == _verb_form(subject[verb]):  # 'She eats 3 ... and bakes ... 4'
                facts.append((current, verbatim))
                current, verbatim = f"{' '.join(subject[:verb])} {piece}", piece
                last = current
            else:
                current, verbatim, last = current + joiner + piece, verbatim + joiner + piece, piece
        facts.append((current, verbatim))
    return facts


def split_facts(sentence: str) -> list[str]:
    """One fact per item: a sentence is split at ';', and at 'and'/'but'/'while' when both sides state a
    quantity and the right side starts a new clause ('..., and then she sold', '... and a small pizza has') or
    goes on with a second verb of the same subject ('She eats three ... and bakes ... with four' → 'She bakes
    ... with four.')."""
    return [_as_fact(clause) for clause, _ in _clauses(sentence)]


# Relations the solution may use without a number written in digits: 'half as many', 'a third of', 'the rest'.
_RELATION = re.compile(r"\b(?:half|halves|third|thirds|quarter|quarters|fourth|fifth|fifths|twice|double|triple|"
                       r"thrice|times|rest|remainder|remaining|same|equal|equally|evenly|each|every|per|as many|"
                       r"as much|more than|less than|fewer than|percent|total|together|all)\b", re.IGNORECASE)


def core_question_and_key_points(question: str, reads: Collection[int] | None = None,
                                 literals: Collection[str] = ()) -> tuple[str, list[str]]:
    """The problem's question sentence and the problem-solving information.

    The core question is the last sentence with a '?' (else the last sentence). A leading condition ('If she
    sells 5 more, how many ...?') or a trailing one ('How many ... if the flock is 20 chickens?') is split off
    and becomes a fact ('She sells 5 more.'). The facts are the other sentences in order, each split by
    :func:`split_facts`, then that condition.

    ``reads`` are the indices (in :func:`~kpdd.compile.gold.programs.question_quantities` order) of the
    quantities the solution reads. With them, the key points are the facts that state a quantity the solution
    reads, and the facts with no number that state a relation ('Half of them have pockets.', 'The rest are
    yellow.'); a sentence with no used quantity (a setting, an irrelevant number) is left out. Without them,
    every fact is a key point. A problem that keeps no fact keeps its whole text as its one key point.

    ``literals`` are the numbers the solution reads (:mod:`kpdd.compile.gold.checks`): for each that neither the
    kept facts nor the core question state, the first fact that states it joins them ('the 9th floor', '22kg',
    'in the ratio 5:7.', '1 quarter' for 0.25), so that the key points state every literal the question states.
    """
    text = " ".join(question.split())
    sentences = split_sentences(text)
    index = max((i for i, s in enumerate(sentences) if "?" in s), default=len(sentences) - 1)
    core, condition = sentences[index], None
    if match := _LEADING_CONDITION.match(core) or _TRAILING_CONDITION.match(core):
        core, condition = match.group("core").rstrip(" ,"), match.group("cond")
        end = match.groupdict().get("end") or "?"
        core = _capitalised(core if core.endswith(("?", ".")) else core + end)
    clauses = [c for i, s in enumerate(sentences) if i != index for c in _clauses(s)]
    clauses += _clauses(condition) if condition else []
    every = clauses
    if reads is not None:
        clauses = _problem_solving(clauses, text, set(reads))
    if clauses and literals:
        clauses = _stating(every, clauses, literals, core)
    return core, [_as_fact(clause) for clause, _ in clauses] or [text]


def _stating(every: list[tuple[str, str]], kept: list[tuple[str, str]], literals: Collection[str], core: str):
    """``kept`` and, for each literal that neither it nor ``core`` states, the first clause of ``every`` that
    writes it; in the question's order."""
    kept = list(kept)
    for literal in checks.unstated(list(literals), " ".join([core, *(clause for clause, _ in kept)])):
        if not checks.is_stated(literal, " ".join([core, *(clause for clause, _ in kept)])):
            kept += [c for c in every if c not in kept and checks.is_stated(literal, c[0])][:1]
    return [c for c in every if c in kept]


def _problem_solving(clauses: list[tuple[str, str]], text: str, reads: set[int]) -> list[tuple[str, str]]:
    """The clauses that state a quantity the solution reads, or a relation and no number (see
    :func:`core_question_and_key_points`); when none does, those that state no number it leaves unread."""
    quantities, cursor, kept, numberless = question_quantities(text), 0, [], []
    for clause, verbatim in clauses:
        start = text.find(verbatim, cursor)
        start = text.find(verbatim) if start < 0 else start
        cursor = max(cursor, start)
        stated = {i for i, q in enumerate(quantities) if start <= q.start and q.end <= start + len(verbatim)}
        # 'twice' is a relation; 'on the 3rd day' a place in an order
        numbers = {i for i in stated
                   if quantities[i].text.lower() not in MULTIPLIERS and quantities[i].kind != "ordinal"}
        if stated & reads or not numbers and _RELATION.search(clause):
            kept.append((clause, verbatim))
        if not numbers - reads:
            numberless.append((clause, verbatim))
    return kept or numberless


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
                and not (i and words[i - 1] == "of" and WRITTEN_NUMBER.fullmatch(w))), len(words))  # 'sets of 12 cans'
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
    numbers = list(WRITTEN_NUMBER.finditer(line))
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
    plain = TIMES_SIGN.sub(" * ", strip_annotations(line))
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
    if final is not None and any(written_value(m) == final for m in WRITTEN_NUMBER.finditer(answer)):
        result = final
    if result is not None and not is_correct(answer, result):
        answer = f"{answer.rstrip('. ')}, so the result is {format_number(result)}."
    return answer
