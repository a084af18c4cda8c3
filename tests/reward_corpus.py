"""The reward regression corpus: adversarial completions with known verdicts, generated, seeded.

Model output is untrusted input: a policy under RL pressure finds any completion that scores 1.0
without being right. Each case is a completion, a reference, an answer format and what the answer
*is*:

- "wrong": not the reference; every built-in reward must score 0.0 (a 1.0 is a wrong-correct);
- "exact": the reference as written (or, for numbers, the same value); every reward must score 1.0
  (controls: a scorer that always says 0 fails them);
- "right": equivalent but written differently (`0.5` for `\\frac{1}{2}`); `math` must score 1.0,
  `match` compares text and may not;
- "any": no verdict on the value (e.g. a true answer too deep or too long to parse); the call must
  still return in time, within its memory limit, and not crash.

`slow` marks the cases built to run into the time limit (towers of exponents, huge sums, deep
nesting); their verdict is never "exact" or "right", so the test can score them under a short limit.

Families cover the issue's named cases, trailing/leading junk (the old first-number fallback),
injections, sums of many terms, nested and unbalanced braces, multiple and empty boxes, unicode
lookalikes and dashes, whitespace tricks, units and percent, huge exponents (time and memory bombs),
long inputs, `number`-format decoys, relations and hedges in words, and correct-answer controls.
`tests/test_reward_corpus.py` runs it.
Inspect or export it by hand:

    python tests/reward_corpus.py                 # counts per family and verdict
    python tests/reward_corpus.py --jsonl out.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, dataclass
from fractions import Fraction

SEED = 11  # issue 11


@dataclass(frozen=True)
class Case:
    family: str
    completion: str
    reference: str
    answer_format: str  # "boxed" | "number"
    verdict: str  # "wrong" | "exact" | "right" | "any"
    slow: bool = False  # built to hit the time limit


def boxed(answer: str, before: str = "Let me work it out step by step. ", after: str = "") -> str:
    return f"{before}So the final answer is \\boxed{{{answer}}}{after}"


# ---------------------------------------------------------------------------------------------
# Families


def named() -> list[Case]:
    """The inputs the issue names, verbatim."""
    ones = " + ".join(["1"] * 1000)
    c = [
        Case("named", boxed("42 + ???"), "42", "boxed", "wrong"),
        Case("named", boxed("42)"), "42", "boxed", "wrong"),
        Case("named", boxed(r"42\%\%"), "42", "boxed", "wrong"),
        Case("named", boxed("1+__import__('os')"), "1", "boxed", "wrong"),
        Case("named", boxed(ones), "1", "boxed", "wrong", slow=True),
        Case("named", "The answer is –42", "42", "number", "wrong"),
        Case("named", "The answer is —42", "42", "number", "wrong"),
        Case("named", boxed("9^{9^{9^{9}}}"), "1", "boxed", "wrong", slow=True),
        Case("named", boxed(r"\sin(x)^{10^{9}}"), "1", "boxed", "wrong", slow=True),
        Case("named", boxed(r"(1+\frac{1}{10^9})^{10^9}"), "e", "boxed", "wrong", slow=True),
        Case("named", boxed("7" * 10_000_000), "7", "boxed", "wrong"),  # a 10 MB box
    ]
    return c


def _int_refs(rng: random.Random, n: int) -> list[str]:
    return [str(rng.choice([rng.randint(3, 99), rng.randint(100, 99999), -rng.randint(3, 999)])) for _ in range(n)]


def trailing_junk(rng: random.Random) -> list[Case]:
    """`<reference><junk>` inside the box: the old fallback read the leading number and scored it."""
    # Not junk: `$` (math delimiters, currency), `'` and `"` (feet/inches, minutes/seconds: units).
    junk = [
        " + ???",
        ")",
        "]",
        r"\%\%",
        " +",
        "*",
        "/",
        "^",
        " =",
        "&",
        "#",
        ",,",
        "@",
        "?",
        " + __import__('os')",
        r"\\",
        "~~",
        ";;",
        " + )",
        " (",
        "||",
        r"\)",
        "-",
        "__",
    ]
    out = []
    for ref in _int_refs(rng, 110):
        j = rng.choice(junk)
        out.append(Case("trailing_junk", boxed(f"{ref}{j}"), ref, "boxed", "wrong"))
    for ref in _int_refs(rng, 40):
        j = rng.choice([" + ???", ")", " ?", r"\%\%"])
        out.append(Case("trailing_junk", boxed(f"{ref}{j}"), ref, "boxed", "wrong"))
    return out


def leading_junk(rng: random.Random) -> list[Case]:
    junk = ["???", ")", "(", "[", "#", "&", "@", "??? ", "; ", "==", ",,", "^", "_"]
    return [
        Case("leading_junk", boxed(f"{rng.choice(junk)}{ref}"), ref, "boxed", "wrong") for ref in _int_refs(rng, 100)
    ]


def injections(rng: random.Random) -> list[Case]:
    """Code, shell, TeX primitives and markup: text to parse, never to run (the test also checks no
    file appears)."""
    payloads = [
        "__import__('os').system('touch PWNED')",
        "__import__('os').system('touch PWNED') + {r}",
        "{r} + __import__('os').system('touch PWNED')",
        "(lambda: __import__('os').system('touch PWNED'))()",
        "eval('{r}')",
        "exec('x={r}')",
        "{r}.__class__",
        "globals()['{r}']",
        "$(touch PWNED){r}",
        "`touch PWNED`{r}",
        "{r}; DROP TABLE answers",
        r"\input{{/etc/passwd}}{r}",
        r"\write18{{touch PWNED}}{r}",
        r"\immediate\write18{{touch PWNED}}",
        r"\def\x{{{r}}}\x",
        r"\newcommand{{\a}}{{{r}}}\a",
        r"\catcode`\{{=12 {r}",
        "<script>{r}</script>",
        "{r}<!-- -->",
        "{{{{ {r} }}}}.format()",
        "os.system('{r}')",
        "import os; {r}",
        "{r} if True else 0",
        "[{r}][0]",
        "{{'a': {r}}}['a']",
        "int('{r}')",
    ]
    out = []
    for ref in _int_refs(rng, 4):
        for p in payloads:
            out.append(Case("injection", boxed(p.format(r=ref)), ref, "boxed", "wrong"))
    out += [Case("injection", f"So it is {p.format(r=9)} finally", "42", "number", "wrong") for p in payloads[:10]]
    return out


def many_terms(rng: random.Random) -> list[Case]:
    """`1 + 1 + ... + 1`: the value is the count, never 1; long ones do not parse (recursion)."""
    out = []
    for n in [2, 3, 5, 10, 30, 50, 100, 300, 1000, 2000]:
        s = " + ".join(["1"] * n)
        out.append(Case("many_terms", boxed(s), "1", "boxed", "wrong", slow=n > 50))
        out.append(Case("many_terms", boxed(s), str(n), "boxed", "right" if n <= 50 else "any", slow=n > 50))
        out.append(Case("many_terms", boxed(" \\cdot ".join(["2"] * min(n, 60))), "2", "boxed", "wrong", slow=n > 50))
    for _ in range(60):
        n = rng.randint(2, 50)
        out.append(Case("many_terms", boxed(" - ".join(["1"] * n)), "1", "boxed", "wrong"))
    return out


def braces(rng: random.Random) -> list[Case]:
    """Nested, unbalanced and escaped braces."""
    out = []
    for ref in _int_refs(rng, 30):
        out += [
            Case("braces", boxed("{" + ref), ref, "boxed", "wrong"),  # unbalanced: no answer
            Case("braces", f"So \\boxed{{{{{ref}}}", ref, "boxed", "wrong"),
            Case("braces", f"So \\boxed{{{ref}\\}}", ref, "boxed", "wrong"),  # escaped: unbalanced
            Case("braces", f"So \\boxed{{{ref}}}}}}}", ref, "boxed", "exact"),  # junk after the box
            Case("braces", boxed("{" + ref + "}"), ref, "boxed", "right"),
            Case("braces", f"\\boxed{{{ref}}} \\boxed{{{ref}", ref, "boxed", "wrong"),  # last box cut
        ]
    for depth in [2, 5, 50, 1000, 5000]:
        deep = depth > 2  # the LaTeX grammar's time grows fast with bare-brace depth
        out.append(
            Case("braces", boxed("{" * depth + "42" + "}" * depth), "42", "boxed", "any" if deep else "right", deep)
        )
        out.append(Case("braces", boxed("{" * depth + "41" + "}" * depth), "42", "boxed", "wrong", deep))
        out.append(Case("braces", boxed("{" * depth + "42"), "42", "boxed", "wrong"))
    for _ in range(30):  # random brace soup around a wrong number
        soup = "".join(rng.choice("{}") for _ in range(rng.randint(1, 20)))
        out.append(Case("braces", boxed(f"{soup}41{soup}"), "42", "boxed", "wrong"))
    return out


def huge_exponents(rng: random.Random) -> list[Case]:
    """Time and memory bombs for sympy: towers, huge powers, factorials of huge numbers."""
    bombs = [
        "10^{10^{10}}",
        "9^{9^{9}}",
        "2^{2^{2^{2^{2^{2}}}}}",
        "(10^{10})!",
        "10^{10}!",
        r"\sin(x)^{10^{9}}",
        r"(1+\frac{1}{10^9})^{10^9}",
        r"x^{10^{10}} + 1",
        "(x+1)^{10^{6}}",
        r"\frac{10^{10^{8}}}{3}",
        r"\sqrt{10^{10^{9}}}",
        "99999999^{99999999}",
        r"(x+y+z)^{1000}",
        r"\binom{10^{9}}{10^{5}}",
        r"\sum_{i=1}^{10^{12}} i^{i}",
        r"\prod_{k=1}^{10^{9}} k",
        r"e^{10^{10}}",
        r"\pi^{10^{9}}",
        r"10^{-10^{10}}",
        r"\tan(10^{10^{5}})",
    ]
    out = [Case("huge_exponent", boxed(b), "1", "boxed", "wrong", slow=True) for b in bombs]
    return out


def unicode_lookalikes(rng: random.Random) -> list[Case]:
    """Digits from other scripts, zero-width characters, dashes: only ASCII digits are numbers."""
    tables = {
        "fullwidth": str.maketrans("0123456789", "０１２３４５６７８９"),
        "math_bold": str.maketrans("0123456789", "𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗"),
        "arabic_indic": str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"),
        "superscript": str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"),
        "devanagari": str.maketrans("0123456789", "०१२३४५६७८९"),
    }
    out = []
    for ref in [str(rng.randint(10, 9999)) for _ in range(20)]:
        for table in tables.values():
            fake = ref.translate(table)
            out.append(Case("unicode", boxed(fake), ref, "boxed", "wrong"))
            out.append(Case("unicode", f"The answer is {fake}.", ref, "number", "wrong"))
        zw = ref[0] + "\u200b" + ref[1:]
        out.append(Case("unicode", boxed(zw), ref, "boxed", "wrong"))
        out.append(Case("unicode", f"The answer is {zw}", ref, "number", "wrong"))
    for dash in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d":
        for ref in [str(rng.randint(3, 999)) for _ in range(3)]:
            out.append(Case("dash", f"x = {dash}{ref}", ref, "number", "wrong"))
            out.append(Case("dash", f"x = {dash}{ref}", f"-{ref}", "number", "exact"))
            out.append(Case("dash", boxed(f"{dash}{ref}"), ref, "boxed", "wrong"))
            out.append(Case("dash", boxed(f"{dash}{ref}"), f"-{ref}", "boxed", "right"))
    for ref in [str(rng.randint(3, 999)) for _ in range(10)]:
        out.append(Case("dash", f"the answer\u2014{ref}", ref, "number", "exact"))  # em dash as punctuation
        out.append(Case("dash", f"3{chr(0x2013)}{ref}", f"-{ref}", "number", "wrong"))  # glued: operator
    return out


def whitespace(rng: random.Random) -> list[Case]:
    out = []
    for ref in _int_refs(rng, 25):
        out += [
            Case("whitespace", boxed(f"  {ref}  "), ref, "boxed", "exact"),
            Case("whitespace", boxed(f"\n{ref}\t"), ref, "boxed", "exact"),
            Case("whitespace", boxed(f"\u00a0{ref}\u00a0"), ref, "boxed", "exact"),
            Case("whitespace", f"So \\boxed  {{{ref}}}", ref, "boxed", "exact"),
        ]
        if len(ref.lstrip("-")) >= 2:
            split = ref[:-1] + " " + ref[-1]
            out.append(Case("whitespace", f"I get {split}", ref, "number", "wrong"))
    return out


def units_percent(rng: random.Random) -> list[Case]:
    out = []
    for _ in range(25):
        n = rng.randint(3, 99)
        out += [
            Case("units", boxed(rf"{n}\text{{ cm}}"), str(n), "boxed", "right"),
            Case("units", boxed(rf"{n + 1}\text{{ cm}}"), str(n), "boxed", "wrong"),
            Case("units", boxed(rf"\${n}"), str(n), "boxed", "right"),
            Case("units", boxed(rf"{n}\%"), f"{n / 100:g}", "boxed", "right"),
            Case("units", boxed(rf"{n + 1}\%"), f"{n / 100:g}", "boxed", "wrong"),
            Case("units", boxed(rf"{n}\%\%"), str(n), "boxed", "wrong"),
            Case("units", f"That is {n}% of it", str(n), "number", "exact"),
            Case("units", f"It weighs {n}kg", str(n), "number", "exact"),
            Case("units", f"It weighs {n + 1}kg", str(n), "number", "wrong"),
        ]
    return out


def multiple_and_empty_boxes(rng: random.Random) -> list[Case]:
    out = []
    for ref in _int_refs(rng, 30):
        wrong = str(int(ref) + 1)
        out += [
            Case("boxes", f"First \\boxed{{{wrong}}}, no wait: \\boxed{{{ref}}}", ref, "boxed", "exact"),
            Case("boxes", f"First \\boxed{{{ref}}}, no wait: \\boxed{{{wrong}}}", ref, "boxed", "wrong"),
            Case("boxes", f"\\boxed{{{ref}}} and \\boxed{{}}", ref, "boxed", "wrong"),
            Case("boxes", boxed(f"\\boxed{{{ref}}}"), ref, "boxed", "right"),
            Case("boxes", boxed(f"{ref}, {wrong}"), ref, "boxed", "wrong"),
            Case("boxes", boxed(f"{ref} \\text{{ or }} {wrong}"), ref, "boxed", "wrong"),
        ]
    for empty in ["", " ", "{}", r"\,", r"\text{}", r"\quad", "~", r"\phantom{42}", r"\hphantom{42}", r"\vphantom{42}"]:
        for ref in ["42", "0", r"\frac{1}{2}"]:
            out.append(Case("boxes", boxed(empty), ref, "boxed", "wrong"))
    out.append(Case("boxes", "no box at all, the answer is 42", "42", "boxed", "wrong"))
    return out


def long_inputs(rng: random.Random) -> list[Case]:
    filler = "Consider the next step carefully. "
    out = [
        Case("long", filler * 30_000 + boxed("42"), "42", "boxed", "exact"),  # ~1 MB of reasoning
        Case("long", boxed("42") + filler * 30_000, "42", "boxed", "exact"),
        Case("long", boxed("4" * 5000), "4" * 5000, "boxed", "any"),  # over the answer cap
        Case("long", boxed("1+" * 3000 + "1"), "1", "boxed", "wrong"),
        Case("long", "1 " * 500_000, "42", "number", "wrong"),
        Case("long", "9" * 1_000_000, "42", "number", "wrong"),
        Case("long", ("1," * 300_000) + "5", "42", "number", "wrong"),
        Case("long", r"\boxed{" * 100_000, "42", "boxed", "wrong"),
        Case("long", "\\boxed{" + "{" * 200_000 + "42", "42", "boxed", "wrong"),
        Case("long", "}" * 500_000 + boxed("41"), "42", "boxed", "wrong"),
        Case("long", "\\" * 1_000_000 + boxed("41"), "42", "boxed", "wrong"),
    ]
    return out


def number_format(rng: random.Random) -> list[Case]:
    """`number` answers: the last number counts; decoys before it, other values after it."""
    out = []
    for _ in range(60):
        n = rng.randint(3, 99999)
        other = n + rng.randint(1, 50)
        out += [
            Case("number", f"I first thought {other}, but it is {n}.", str(n), "number", "exact"),
            Case("number", f"It is {n}, or maybe {other}.", str(n), "number", "wrong"),
            Case("number", f"Total: {n:,} apples", str(n), "number", "exact"),
            Case("number", f"so {n}.0", str(n), "number", "exact"),
            Case("number", f"so {n}.5", str(n), "number", "wrong"),
            Case("number", f"so x{n}", str(n), "number", "wrong"),  # glued to a word: not a number
        ]
    out += [
        Case("number", "it is 1e5", "100000", "number", "exact"),
        Case("number", "it is 1e999", "999", "number", "wrong"),
        Case("number", "it is 2.5e-3", "0.0025", "number", "exact"),
        Case("number", "CO2", "2", "number", "wrong"),
        Case("number", "version v1.2", "1.2", "number", "wrong"),
        Case("number", "3-5", "-5", "number", "wrong"),
        Case("number", "the result is (-5)", "-5", "number", "exact"),
        Case("number", "NaN", "0", "number", "wrong"),
        Case("number", "Infinity", "0", "number", "wrong"),
        Case("number", "no digits here", "0", "number", "wrong"),
    ]
    return out


def _fraction_latex(f: Fraction) -> str:
    sign = "-" if f < 0 else ""
    return rf"{sign}\frac{{{abs(f.numerator)}}}{{{f.denominator}}}"


def wrong_values(rng: random.Random) -> list[Case]:
    """Clean, parseable answers with the wrong value (off by one, sign, scale, reciprocal)."""
    out = []
    for _ in range(60):
        n = rng.randint(3, 9999)
        for w in (n + 1, n - 1, -n, 10 * n, 2 * n):
            out.append(Case("wrong_value", boxed(str(w)), str(n), "boxed", "wrong"))
        out.append(Case("wrong_value", boxed(rf"\frac{{1}}{{{n}}}"), str(n), "boxed", "wrong"))
    for _ in range(40):
        f = Fraction(rng.randint(1, 50), rng.randint(2, 50))
        if f.denominator == 1:
            continue
        out.append(Case("wrong_value", boxed(_fraction_latex(f + 1)), _fraction_latex(f), "boxed", "wrong"))
        out.append(Case("wrong_value", boxed(_fraction_latex(-f)), _fraction_latex(f), "boxed", "wrong"))
        out.append(Case("wrong_value", boxed(f"{float(f) + 0.01:.4f}"), _fraction_latex(f), "boxed", "wrong"))
    return out


def relations_hedges(rng: random.Random) -> list[Case]:
    """An answer that says more than its value: a relation other than `symbol = value` (`7 = 42` was
    read by its right side, `42 \approx 7` by its left), or text that is not a unit (`42 \text{ (or 7)}`
    was read as 42). Controls: `x = 42`, units in words, an answer that is text, equation references."""
    wrong_forms = [
        "{w} = {r}",
        "{r} = {w}",
        "{r} = {r}",
        "{w} \\equiv {r}",
        "{r} \\equiv {w}",
        "x \\equiv {r}",
        "{r} \\approx {w}",
        "{w} \\approx {r}",
        "x \\approx {r}",
        "{r} \\approxeq {w}",
        "{r} ~= {w}",
        "{r} \\text{{ (or {w})}}",
        "{r} \\textbf{{ (or {w})}}",
        "{r} \\mbox{{ or more}}",
        "{r} \\text{{ or more}}",
        "{r}\\text{{ (approximately)}}",
        "{r} \\text{{ at least}}",
        "{r} \\mathrm{{(or\\ {w})}}",
        "{r}\\text{{-ish}}",
        "{r} \\textit{{ish}}",
        "{r} \\text{{ ({w})}}",
        "{r} \\textrm{{ or {w}}}",
        "x + {d} = {r}",
        "a = {w} = {r}",
        "x = {w}, y = {r}",
        "{w} < {r}",
        "{r} \\leq {w}",
        "{r} \\neq {w}",
        "x \\in {r}",
        "x = y = {r}",
        "{r} \\text{{ roughly}}",
        "{r}\\,\\text{{about}}",
        "{r} \\text{{ apples or {w}}}",
        "{r} \\text{{ {{or}} }}",
    ]
    right_forms = [
        "x = {r}",
        "x_1 = {r}",
        "\\theta = {r}",
        "n={r}",
        "{r} \\text{{ cm}}",
        "{r} \\text{{ square units}}",
        "{r}\\,\\text{{apples}}",
        "{r} \\text{{ dollars}}",
        "{r}\\ \\mathrm{{km}}",
        "\\text{{{r}}}",
    ]
    out = []
    for ref in _int_refs(rng, 12):
        r, w = int(ref), int(ref) + rng.randint(1, 9)
        for form in wrong_forms:
            out.append(Case("relation", boxed(form.format(r=r, w=w, d=w - r)), ref, "boxed", "wrong"))
        for form in right_forms:
            out.append(Case("relation", boxed(form.format(r=r)), ref, "boxed", "right"))
    for _ in range(10):
        f = Fraction(rng.randint(1, 30), rng.randint(2, 30))
        if f.denominator == 1:
            continue
        latex, other = _fraction_latex(f), f"{float(f) + rng.randint(1, 9):g}"
        out += [
            Case("relation", boxed(f"{float(f):.6g} \\approx {other}"), latex, "boxed", "wrong"),
            Case("relation", boxed(f"{latex} = {float(f):.6g}"), latex, "boxed", "wrong"),
            Case("relation", boxed(f"{latex} \\text{{ (or {other})}}"), latex, "boxed", "wrong"),
            Case("relation", boxed(f"y = {latex}"), latex, "boxed", "right"),
        ]
    for _ in range(10):  # the reference is an equation: compared equation to equation, as before
        a, b = rng.randint(2, 9), rng.randint(1, 20)
        out += [
            Case("relation", boxed(f"y={a}x+{b}"), f"y = {a}x + {b}", "boxed", "right"),
            Case("relation", boxed(f"y = {b} + {a}x"), f"y = {a}x + {b}", "boxed", "right"),
            Case("relation", boxed(f"y = {a}x + {b + 1}"), f"y = {a}x + {b}", "boxed", "wrong"),
        ]
    return out


def controls(rng: random.Random) -> list[Case]:
    """Right answers: as written ("exact") and in equivalent forms ("right")."""
    out = []
    for _ in range(80):
        n = rng.randint(-999, 9999)
        out.append(Case("control", boxed(str(n)), str(n), "boxed", "exact"))
        out.append(Case("control", f"The answer is {n}", str(n), "number", "exact"))
    for _ in range(60):
        f = Fraction(rng.randint(1, 60), rng.randint(2, 60))
        if f.denominator == 1:
            continue
        latex = _fraction_latex(f)
        out.append(Case("control", boxed(latex), latex, "boxed", "exact"))
        out.append(Case("control", boxed(rf"\dfrac{{{f.numerator}}}{{{f.denominator}}}"), latex, "boxed", "right"))
        out.append(Case("control", boxed(f"{f.numerator}/{f.denominator}"), latex, "boxed", "right"))
        if f.denominator in (2, 4, 5, 8, 10, 20, 25, 40, 50):
            out.append(Case("control", boxed(f"{float(f):g}"), latex, "boxed", "right"))
    for _ in range(40):
        a, b = rng.randint(2, 9), rng.randint(1, 20)
        out.append(Case("control", boxed(f"{b}+{a}x"), f"{a}x+{b}", "boxed", "right"))
        out.append(Case("control", boxed(rf"{a}\sqrt{{{b}}}"), rf"\sqrt{{{a * a * b}}}", "boxed", "right"))
        out.append(Case("control", boxed(rf"\left({a},{b}\right)"), f"({a}, {b})", "boxed", "right"))
        out.append(Case("control", boxed(f"x = {a * b}"), str(a * b), "boxed", "right"))
        out.append(Case("control", boxed(f"{a * b}."), str(a * b), "boxed", "right"))
    return out


FAMILIES = [
    named,
    trailing_junk,
    leading_junk,
    injections,
    many_terms,
    braces,
    huge_exponents,
    unicode_lookalikes,
    whitespace,
    units_percent,
    multiple_and_empty_boxes,
    long_inputs,
    number_format,
    wrong_values,
    relations_hedges,
    controls,
]


def corpus(seed: int = SEED) -> list[Case]:
    """Every case, in a fixed order for a given seed."""
    rng = random.Random(seed)
    out: list[Case] = []
    for family in FAMILIES:
        out += family() if family is named else family(rng)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jsonl", default="", help="write every case as one JSON line")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    cases = corpus(args.seed)
    counts: dict[tuple[str, str], int] = {}
    for c in cases:
        counts[c.family, c.verdict] = counts.get((c.family, c.verdict), 0) + 1
    for (family, verdict), n in sorted(counts.items()):
        print(f"{family:<15} {verdict:<6} {n:5d}")
    print(f"total {len(cases)}")
    if args.jsonl:
        with open(args.jsonl, "w", encoding="utf-8") as f:
            for c in cases:
                f.write(json.dumps(asdict(c), ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
