"""One number as people and models write it: the grammar `gsm8k_accuracy` reads an answer with, no dependency.

`parse_number(text)` gives the exact value (a Fraction) or None. Accepted, each read as the value shown:

    18, +18, -5, −5 (U+2212)                          18, 18, -5, -5
    1,000   1{,}000   1\\,000   1 000   1 000 (thin)   1000  (groups of three after a first group of 1-3 digits
                                                            not led by 0, one separator throughout)
    18.00   .5   3/4   \\frac{3}{4}   \\dfrac{3}{4}      18, 0.5, 0.75, 0.75, 0.75
    \\tfrac, \\cfrac, \\frac34, \\frac3{4}, \\frac{3}4     0.75  (an argument without braces is one digit, as in LaTeX)
    $18   \\$18   -$5   $-5   18$   1,000.99$          a currency sign before or after the number
    18 dollars   18 \\text{dollars}   18 \\textbf{m}    a unit in words or in \\text, \\textbf, \\textrm, \\textit,
                                                      \\mbox, \\mathrm, \\mathbf, \\mathit
    18%   18\\%   18 percent                           18  (the gold is the number a percent answer names)
    The answer is 18   x = 18   Total: 18            a label of words before the number
    18.   \\boxed{18}   $18$   \\(18\\)   \\[18\\]   $$18$$ the trailing period and whole-answer wrappers are peeled
    **18**   *18*   __18__   \\textbf{18}   \\mathbf{18}  markdown and LaTeX emphasis around the whole answer
    (18)   \\left( \\frac{1}{3} \\right)                  parentheses around the whole answer
    #### 72   #### 1,000                              GSM8K's answer marker before the number
    $28$ %   $28$ percent   $\\boxed{28}$ pct          a unit after the math delimiters

Refused (None), so the answer scores 0.0:

    18 or 19   18, 19   **18** or **19**   $18$ or $19$   several numbers: a list of candidates is no answer
    9 * 2   12 + 7                                    an expression (only the `math_verify` option judges them)
    0,5   2,8   1,00   0,500                          a decimal comma or a malformed thousands group
    18 thousand   18k   1.5 million                   a magnitude word changes the value: not a unit
    eighteen   ١٨ (Arabic-Indic)   １８ (fullwidth)      words and non-ASCII digits
    18/0   \\frac123                                  no value, or LaTeX that does not read as one fraction

Every step is a bounded regular expression over at most MAX_ANSWER_CHARS characters: microseconds per answer.
"""

from __future__ import annotations

import re
from fractions import Fraction

# Longest answer (characters, after stripping whitespace) that is parsed at all; a GSM8K answer is a number.
MAX_ANSWER_CHARS = 256

# Non-ASCII characters that are spelling rather than content: the typeset minus and the spaces used between
# thousands groups (thin, narrow no-break, no-break).
_SPELLING = str.maketrans({"\u2212": "-", "\u2009": " ", "\u202f": " ", "\u00a0": " "})

# Wrappers around the whole answer, peeled before the grammar applies: (opening, closing). `**` before `*`.
_WRAPPERS = (
    ("\\boxed{", "}"),
    ("\\textbf{", "}"),
    ("\\mathbf{", "}"),
    ("\\(", "\\)"),
    ("\\[", "\\]"),
    ("$", "$"),
    ("**", "**"),
    ("*", "*"),
    ("__", "__"),
    ("\\left(", "\\right)"),
    ("(", ")"),
)
_WRAPPER_FIRST = frozenset(opening[0] for opening, _ in _WRAPPERS)
_WRAPPER_LAST = frozenset(closing[-1] for _, closing in _WRAPPERS)

# LaTeX commands a unit may be written in: 18 \\text{dollars}, \\frac{1}{3} \\textbf{meters}.
TEXT_COMMANDS = "text|textbf|textrm|textit|mbox|mathrm|mathbf|mathit"
# A unit: percent, words, or words in a LaTeX text command.
UNIT_PATTERN = rf"\\?%|\\(?:{TEXT_COMMANDS})[ ]*\{{[ ]*[A-Za-z][A-Za-z ]{{0,40}}\}}|[A-Za-z][A-Za-z ]{{0,40}}"

# A label before the number: "The answer is", "x =", "Total:".
_LABEL = re.compile(r"[A-Za-z][A-Za-z ]{0,40}(?::|=|[ ]is)[ ]*")

# A number in math delimiters followed by its unit: "$28$ %", "\(28\) percent".
_DELIMITED_THEN_UNIT = re.compile(
    r"(?:\$(?P<dollar>[^$]{1,64})\$|\\\((?P<paren>.{1,64}?)\\\)|\\\[(?P<bracket>.{1,64}?)\\\])[ ]*"
    rf"(?P<unit>{UNIT_PATTERN})"
)

# One number as people write it, ASCII digits only (a unicode digit is not an answer). Digit runs are bounded so
# that int() stays cheap; the thousands form needs groups of exactly three, one separator throughout, after a first
# group of 1-3 digits that does not start with 0 ("0,500" is not 500: it reads as a decimal comma).
_NUMBER = re.compile(
    r"""
    (?:[A-Za-z][A-Za-z ]{0,40}(?::|=|[ ]is)[ ]*)?           # a label (see _LABEL)
    (?P<sign>[-+])?[ ]*
    (?:\\?\$[ ]*(?P<sign_after_currency>[-+])?[ ]*)?         # "$", "\$"; "-$5" and "$-5" both read -5
    (?:
        \\[dtc]?frac[ ]*
            (?:\{[ ]*(?P<frac_sign>-)?[ ]*(?P<frac_num>[0-9]{1,40})[ ]*\}|(?P<frac_num_digit>[0-9]))[ ]*
            (?:\{[ ]*(?P<frac_den>[0-9]{1,40})[ ]*\}|(?P<frac_den_digit>[0-9]))
      | (?P<num>[0-9]{1,40})[ ]*/[ ]*(?P<den>[0-9]{1,40})
      | (?P<int>[1-9][0-9]{0,2}(?P<sep>,|\{,\}|\\,|\\!|\\[ ]|[ ])[0-9]{3}(?:(?P=sep)[0-9]{3}){0,12}|[0-9]{1,40})
        (?:\.(?P<dec>[0-9]{1,40}))?
      | \.(?P<dec_only>[0-9]{1,40})
    )
    [ ]*(?:\\?\$)?                                           # a currency sign after the number: "1,000.99$"
    [ ]*(?:                                                  # a unit: %, words, \\text{words}
        \\?%
      | \\(?:TEXT_COMMANDS)[ ]*\{[ ]*(?P<latex_unit>[A-Za-z][A-Za-z ]{0,40})\}
      | (?P<unit>[A-Za-z][A-Za-z ]{0,40})
    )?
    [ ]*
    """.replace("TEXT_COMMANDS", TEXT_COMMANDS),
    re.VERBOSE,
)

# Words after a number that change its value rather than name its unit ("m" stays a unit: metres).
MAGNITUDE_WORDS = frozenset({"hundred", "thousand", "million", "billion", "trillion", "dozen", "k", "bn"})


def _peel(text: str) -> str:
    """`text` without surrounding whitespace, a trailing period, a `####` marker, a label, and whole-answer wrappers;
    a number in math delimiters followed by a unit becomes the number and the unit."""
    text = text.strip()
    for _ in range(6):  # wrappers nest at most a few deep in real answers
        before = text
        if text.endswith(".") and not text.endswith(".."):
            text = text[:-1].rstrip()
        if text.startswith("####"):
            text = text[4:].lstrip()
        label = _LABEL.match(text)
        if label is not None:
            text = text[label.end() :]
        if text and text[0] in _WRAPPER_FIRST:
            if text[-1] in _WRAPPER_LAST:
                for opening, closing in _WRAPPERS:
                    if len(text) > len(opening) + len(closing) and text.startswith(opening) and text.endswith(closing):
                        text = text[len(opening) : -len(closing)].strip()
                        break
            else:
                delimited = _DELIMITED_THEN_UNIT.fullmatch(text)
                if delimited is not None:
                    inner = delimited["dollar"] or delimited["paren"] or delimited["bracket"]
                    text = f"{_peel(inner)} {delimited['unit']}"
        if text == before:
            break
    return text


def parse_number(text: str) -> Fraction | None:
    """The value of `text` when it is one number as people write it (see the module docstring), else None."""
    if len(text) > MAX_ANSWER_CHARS + 16:
        return None
    if not text.isascii():
        text = text.translate(_SPELLING)
        if not text.isascii():
            return None
    text = text.strip()
    match = _NUMBER.fullmatch(text)  # most answers are a bare number: no peeling
    if match is None:
        match = _NUMBER.fullmatch(_peel(text))
        if match is None:
            return None
    return _value(match)


def _value(match: re.Match[str]) -> Fraction | None:
    unit = match["unit"] or match["latex_unit"]
    if unit and not MAGNITUDE_WORDS.isdisjoint(unit.lower().split()):
        return None  # "18 thousand" is not 18
    signs = [sign for sign in (match["sign"], match["sign_after_currency"], match["frac_sign"]) if sign]
    if len(signs) > 1:
        return None
    negative = signs == ["-"]
    numerator_text = match["frac_num"] or match["frac_num_digit"] or match["num"]
    if numerator_text is not None:
        denominator = int(match["frac_den"] or match["frac_den_digit"] or match["den"])
        if denominator == 0:
            return None
        value = Fraction(int(numerator_text), denominator)
    elif match["dec_only"] is not None:
        value = Fraction(int(match["dec_only"]), 10 ** len(match["dec_only"]))
    else:
        value = Fraction(int(re.sub(r"[^0-9]", "", match["int"])))
        if match["dec"]:
            value += Fraction(int(match["dec"]), 10 ** len(match["dec"]))
    return -value if negative else value
