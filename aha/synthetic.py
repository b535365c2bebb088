"""Offline, seeded task generators: arithmetic word problems in GSM8K format and Countdown problems.

Pure Python, no network, deterministic for a seed: the CPU demo and the tests build their data from here.

What "held-out" means. A problem's *key* is its arithmetic skeleton: for a word problem the start number plus the
ordered (operator, operand) steps, for Countdown the sorted numbers plus the target. Every key is assigned to
exactly one split by a hash of (seed, key), so no test problem shares its skeleton (and therefore not its question
text either) with any training problem. With small numbers the single facts still overlap: a test problem
`3 + 4` may be unseen while the training set holds `4 + 3`, or holds `3 + 4` as one step of a longer problem.
Held-out accuracy therefore measures applying known arithmetic to unseen problems, not discovering new facts.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterator
from fractions import Fraction

# Word-problem vocabulary. The pronoun goes with the name.
NAMES: tuple[tuple[str, str], ...] = (
    ("Tom", "he"), ("Anna", "she"), ("Ben", "he"), ("Maya", "she"), ("Leo", "he"), ("Sara", "she"),
    ("Omar", "he"), ("Lena", "she"), ("Jack", "he"), ("Ella", "she"), ("Ravi", "he"), ("Nora", "she"),
    ("Sam", "he"), ("Ivy", "she"), ("Max", "he"), ("Zoe", "she"), ("Eli", "he"), ("Mia", "she"),
    ("Noah", "he"), ("Lily", "she"),
)  # fmt: skip
OBJECTS: tuple[str, ...] = (
    "apples", "marbles", "stickers", "books", "pencils", "cookies", "coins", "stamps", "shells", "cards",
    "balloons", "crayons", "oranges", "toy cars", "buttons", "flowers",
)  # fmt: skip
START_TEMPLATES: tuple[str, ...] = (
    "{name} has {n} {obj}.",
    "{name} starts with {n} {obj}.",
    "There are {n} {obj} in {name}'s box.",
    "{name} collected {n} {obj}.",
)
# {pronoun} is capitalised where it starts a sentence.
STEP_TEMPLATES: dict[str, tuple[str, ...]] = {
    "+": (
        "{Pronoun} buys {n} more.",
        "{Pronoun} finds {n} more {obj}.",
        "A friend gives {name} {n} more {obj}.",
        "Then {pronoun} gets {n} more.",
    ),
    "-": (
        "{Pronoun} gives {n} away.",
        "{Pronoun} loses {n} {obj}.",
        "Then {pronoun} sells {n} of them.",
        "{Pronoun} uses {n} {obj}.",
    ),
    "*": (
        "Then {pronoun} ends up with {n} times as many.",
        "{Pronoun} multiplies the {obj} by {n}.",
        "The number of {obj} becomes {n} times bigger.",
    ),
}
QUESTION_TEMPLATES: tuple[str, ...] = (
    "How many {obj} does {name} have now?",
    "How many {obj} does {name} have in the end?",
    "How many {obj} are there now?",
)
# One worked line per step: "<name> has <before> <op> <n> = <after> <obj>."
WORKED_LINE = "{name} has {before} {op} {n} = {after} {obj}."
# wording "plain": the bare expression, left to right (a small pretrained model is right far more often on it)
PLAIN_QUESTION = "What is {expression}?"
PLAIN_WORKED_LINE = "{before} {op} {n} = {after}"
WORDINGS = ("story", "plain")

# Multiplication keeps facts small: the multiplier is 2..MAX_MULTIPLIER and the value multiplied at most MAX_FACTOR.
MAX_MULTIPLIER = 5
MAX_FACTOR = 10
OPERATORS = "+-*"

ArithKey = tuple[int, tuple[tuple[str, int], ...]]
CountdownKey = tuple[tuple[int, ...], int]


def _in_test_split(seed: int, key: object, test_share: float) -> bool:
    """Stable split assignment of a problem skeleton: the same (seed, key) lands in the same split in every run."""
    digest = hashlib.blake2b(f"{seed}|{key!r}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < test_share


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _fill_splits(
    *,
    n_train: int,
    n_test: int,
    seed: int,
    test_share: float,
    draw: Callable[[random.Random], tuple[object, dict, str]],
    what: str,
) -> tuple[list[dict], list[dict]]:
    """Draw problems until both splits are full; a row goes to the split its key hashes to.

    `draw(rng)` returns (key, row, dedup_text); rows whose dedup_text was already drawn are skipped, so no row
    repeats within or across splits.
    """
    _check(n_train >= 0 and n_test >= 0, f"n_train and n_test must be >= 0, got {n_train} and {n_test}")
    _check(0.0 < test_share < 1.0, f"test_share must lie strictly between 0 and 1, got {test_share}")
    rng = random.Random(seed)
    train: list[dict] = []
    test: list[dict] = []
    seen: set[str] = set()
    # Rejections come from duplicates and from keys hashed to a split that is already full.
    max_draws = 200 * (n_train + n_test) + 10_000
    for _ in range(max_draws):
        if len(train) >= n_train and len(test) >= n_test:
            return train, test
        key, row, text = draw(rng)
        if text in seen:
            continue
        split = test if _in_test_split(seed, key, test_share) else train
        if len(split) >= (n_test if split is test else n_train):
            continue
        seen.add(text)
        split.append(row)
    raise ValueError(
        f"could only generate {len(train)} train and {len(test)} test distinct {what} problems of the "
        f"{n_train} and {n_test} asked: the settings allow too few distinct problems. Raise max_number or the "
        "number of operations/numbers, or ask for fewer rows."
    )


# ----------------------------------------------------------------------------------------------------------------
# Arithmetic word problems (GSM8K format)


def _draw_arith_key(
    rng: random.Random, *, max_number: int, min_ops: int, max_ops: int, operators: str
) -> ArithKey | None:
    """Start number and steps whose every intermediate value is a non-negative integer; None when stuck."""
    value = rng.randint(1, max_number)
    start = value
    steps: list[tuple[str, int]] = []
    for _ in range(rng.randint(min_ops, max_ops)):
        choices = [op for op in operators if (op != "-" or value >= 1) and (op != "*" or value <= MAX_FACTOR)]
        if not choices:
            return None
        op = rng.choice(choices)
        if op == "+":
            n = rng.randint(1, max_number)
            value += n
        elif op == "-":
            n = rng.randint(1, min(value, max_number))
            value -= n
        else:
            n = rng.randint(2, MAX_MULTIPLIER)
            value *= n
        steps.append((op, n))
    return start, tuple(steps)


def _render_plain(key: ArithKey) -> dict:
    """The skeleton as a bare expression: "What is 13 + 9 - 4?", one worked line per step ("13 + 9 = 22")."""
    start, steps = key
    worked: list[str] = []
    value = start
    for op, n in steps:
        after = value + n if op == "+" else value - n if op == "-" else value * n
        worked.append(PLAIN_WORKED_LINE.format(before=value, op=op, n=n, after=after))
        value = after
    expression = " ".join([str(start), *(f"{op} {n}" for op, n in steps)])
    return {"question": PLAIN_QUESTION.format(expression=expression), "answer": "\n".join(worked) + f"\n#### {value}"}


def _render_arith(rng: random.Random, key: ArithKey) -> dict:
    name, pronoun = rng.choice(NAMES)
    obj = rng.choice(OBJECTS)
    fields = {"name": name, "pronoun": pronoun, "Pronoun": pronoun.capitalize(), "obj": obj}
    start, steps = key
    sentences = [rng.choice(START_TEMPLATES).format(n=start, **fields)]
    worked: list[str] = []
    value = start
    for op, n in steps:
        sentences.append(rng.choice(STEP_TEMPLATES[op]).format(n=n, **fields))
        after = value + n if op == "+" else value - n if op == "-" else value * n
        worked.append(WORKED_LINE.format(name=name, before=value, op=op, n=n, after=after, obj=obj))
        value = after
    sentences.append(rng.choice(QUESTION_TEMPLATES).format(**fields))
    return {"question": " ".join(sentences), "answer": "\n".join(worked) + f"\n#### {value}"}


def arith_splits(
    *,
    n_train: int,
    n_test: int,
    seed: int,
    max_number: int,
    min_ops: int,
    max_ops: int,
    operators: str = "+-",
    test_share: float = 0.25,
    wording: str = "story",
) -> tuple[list[dict], list[dict]]:
    """Word problems `{"question", "answer": "<one worked line per step>\\n#### <int>"}`, split train/test.

    Wording: "story" (default) tells the steps as a short story ("Tom has 3 apples. He buys 4 more. ..."); "plain"
    asks for the bare expression, evaluated left to right ("What is 3 + 4 - 2?"). Plain questions are one per
    skeleton, so the settings allow fewer distinct rows.

    Numbers: the start value and every +/- operand are 1..max_number; a `*` step multiplies a value of at most
    MAX_FACTOR by 2..MAX_MULTIPLIER. Every intermediate and final value is a non-negative integer. Each problem has
    min_ops..max_ops steps with operators drawn from `operators` (a subset of "+-*").

    Splits: a problem's skeleton (start, ((op, operand), ...)) lands in the test split with probability `test_share`
    by a seeded hash, so the splits share no skeleton and no question text (see the module docstring for what that
    does and does not hold out). Rows are distinct; the same skeleton may recur within a split in different wording
    when the skeleton space is small. Same arguments -> same rows in the same order.
    """
    _check(max_number >= 1, f"max_number must be >= 1, got {max_number}")
    _check(1 <= min_ops <= max_ops, f"need 1 <= min_ops <= max_ops, got min_ops={min_ops}, max_ops={max_ops}")
    _check(
        bool(operators) and set(operators) <= set(OPERATORS),
        f"operators must be a non-empty subset of {OPERATORS!r}, got {operators!r}",
    )

    _check(wording in WORDINGS, f"wording must be one of {', '.join(WORDINGS)}, got {wording!r}")

    def draw(rng: random.Random) -> tuple[object, dict, str]:
        key = None
        while key is None:
            key = _draw_arith_key(rng, max_number=max_number, min_ops=min_ops, max_ops=max_ops, operators=operators)
        row = _render_plain(key) if wording == "plain" else _render_arith(rng, key)
        return key, row, row["question"]

    return _fill_splits(n_train=n_train, n_test=n_test, seed=seed, test_share=test_share, draw=draw, what="arithmetic")


_CALCULATOR = re.compile(r"<<[^>]*>>")


def worked_completion(answer: str) -> tuple[str, str]:
    """Split a GSM8K answer into (reasoning, final number): calculator annotations `<<...>>` and thousands
    separators in the final number are removed.

    >>> worked_completion("Tom has 3 + 4 = <<3+4=7>>7 apples.\\n#### 7")
    ('Tom has 3 + 4 = 7 apples.', '7')
    """
    reasoning, sep, final = answer.rpartition("####")
    if not sep:
        raise ValueError(f"a GSM8K answer ends with '#### <number>'; got no '####' in {answer[-80:]!r}")
    final = final.strip().replace(",", "")
    if not final:
        raise ValueError(f"a GSM8K answer ends with '#### <number>'; got nothing after '####' in {answer[-80:]!r}")
    return _CALCULATOR.sub("", reasoning).strip(), final


# ----------------------------------------------------------------------------------------------------------------
# Countdown


def _combine(rng: random.Random, values: list[tuple[Fraction, str]], max_target: int) -> tuple[Fraction, str] | None:
    """Fold the numbers into one random expression tree whose value is an integer in 1..max_target; None when the
    drawn tree cannot reach one. Inner operators are uniform; the last one is drawn among those that land in range
    (about 4x fewer rejections, which keeps 10k rows under a second or two)."""
    values = list(values)
    while len(values) > 1:
        i, j = rng.sample(range(len(values)), 2)
        (a, ea), (b, eb) = values[i], values[j]
        if len(values) > 2:
            op = rng.choice("+-*/")
            if op == "/" and b == 0:
                return None
            value = a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a / b
        else:
            results = [("+", a + b), ("-", a - b), ("*", a * b)] + ([("/", a / b)] if b != 0 else [])
            results = [(op, v) for op, v in results if v.denominator == 1 and 1 <= v <= max_target]
            if not results:
                return None
            op, value = rng.choice(results)
        values = [v for k, v in enumerate(values) if k not in (i, j)] + [(value, f"({ea} {op} {eb})")]
    return values[0]


def countdown_splits(
    *,
    n_train: int,
    n_test: int,
    seed: int,
    min_numbers: int,
    max_numbers: int,
    max_number: int,
    max_target: int,
    test_share: float = 0.25,
) -> tuple[list[dict], list[dict]]:
    """Countdown problems `{"nums": [...], "target": int}`, split train/test.

    Each problem has min_numbers..max_numbers numbers in 1..max_number and an integer target in 1..max_target that
    some expression reaches using every number exactly once with + - * / and parentheses (the generator builds one).
    Arithmetic is exact (fractions): intermediate results may be negative or non-integer, e.g. (7 / 2) * 4 = 14,
    so a checker must evaluate exactly or with a float tolerance. The skeleton (sorted nums, target) decides the
    split as in `arith_splits`; no (sorted nums, target) pair appears twice across both splits.
    """
    _check(2 <= min_numbers <= max_numbers, f"need 2 <= min_numbers <= max_numbers, got {min_numbers}, {max_numbers}")
    _check(
        max_number >= 1 and max_target >= 1, f"max_number and max_target must be >= 1, got {max_number}, {max_target}"
    )

    def draw(rng: random.Random) -> tuple[object, dict, str]:
        while True:
            nums = [rng.randint(1, max_number) for _ in range(rng.randint(min_numbers, max_numbers))]
            result = _combine(rng, [(Fraction(n), str(n)) for n in nums], max_target)
            if result is not None:
                target = int(result[0])
                key = (tuple(sorted(nums)), target)
                return key, {"nums": nums, "target": target}, repr(key)

    return _fill_splits(n_train=n_train, n_test=n_test, seed=seed, test_share=test_share, draw=draw, what="Countdown")


def _expressions(values: list[tuple[Fraction, str]]) -> Iterator[tuple[Fraction, str]]:
    """Every value reachable by combining all of `values` (exhaustive; fine for up to 5 numbers)."""
    if len(values) == 1:
        yield values[0]
        return
    for i in range(len(values)):
        for j in range(len(values)):
            if i == j:
                continue
            (a, ea), (b, eb) = values[i], values[j]
            rest = [v for k, v in enumerate(values) if k not in (i, j)]
            candidates = [(a + b, f"({ea} + {eb})"), (a - b, f"({ea} - {eb})"), (a * b, f"({ea} * {eb})")]
            if b != 0:
                candidates.append((a / b, f"({ea} / {eb})"))
            for candidate in candidates:
                yield from _expressions([*rest, candidate])


def solve_countdown(nums: list[int], target: int) -> str | None:
    """An expression using every number once that equals `target` exactly (outer parentheses dropped), or None."""
    for value, expression in _expressions([(Fraction(n), str(n)) for n in nums]):
        if value == target:
            return expression[1:-1] if expression.startswith("(") else expression
    return None
