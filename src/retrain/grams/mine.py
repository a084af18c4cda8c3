"""Mining strategic grams: word n-grams whose presence marks correct completions of the same prompt.

    rows = read_generations(["logs/campaign_X"])            # emergence/generations.jsonl rows
    result = mine_grams(rows)                               # ranked GramScore list + what was counted
    print(render_table(result)); Path("grams.toml").write_text(render_snippet(result))

**What is counted.** Each completion is split into words (`\\w+`, apostrophes inside words kept,
lowercased) and into *runs* of words joined only by whitespace, commas, colons, semicolons or dashes:
the separators `retrain.rl.planning` accepts inside a gram. n-grams never cross a run boundary, so a
mined gram always matches, during training, the text it was counted in. A gram is counted once per
completion (document frequency).

**Task content is dropped**: grams with a digit in any word (numbers, operands, answers) and grams
that echo the prompt (at least half of the completions that contain the gram have it in their own
prompt too, e.g. "what is the sum").

**Score.** For gram g and prompt group k (one step's completions of one prompt, in one run), the 2×2
table is (a, b, c, d) = (correct with g, correct without, incorrect with, incorrect without), n = a+b+c+d.
The Cochran–Mantel–Haenszel statistic pools the groups::

    z = Σ_k (a_k − E_k) / √(Σ_k V_k),   E_k = (a+b)(a+c)/n,   V_k = (a+b)(c+d)(a+c)(b+d) / (n²(n−1))

z > 0 when completions with g are correct more often than completions of the *same prompt* without it,
so a prompt's difficulty cannot make a gram look good (comparing across prompts, any phrase tied to easy
prompts would). Only groups with both outcomes contribute, which are exactly the groups RL learns from.
z grows with both the effect and its support, and needs no smoothing for empty cells. When fewer than
`MIN_INFORMATIVE_GROUPS` groups have both outcomes (e.g. one completion logged per prompt), the whole
set is one table: the plain two-proportion z, confounded by prompt difficulty (the result says so).

**Selection.** Candidates need `min_support` completions (and `min_share` of all). A gram that nearly
always occurs inside one longer gram gives way to it (`absorbed_grams`). The rest are ranked by z (then
support), and a gram that contains, or is contained in, a higher-ranked chosen gram is skipped, so
"let me", "me verify" and "let me verify" give one entry.
"""

from __future__ import annotations

import glob
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from retrain.errors import RetrainError
from retrain.rl.planning import GRAM_SEPARATOR

WORD_RE = re.compile(r"\w+(?:['’]\w+)*")
_JOINABLE = re.compile(GRAM_SEPARATOR)
CORRECT_THRESHOLD = 0.5  # rows without a `correct` field: reward > 0.5, as the trainer decides (docs/metrics.md)
MIN_COMPLETIONS = 20  # below this, any ranking is noise; the CLI refuses with advice
MIN_INFORMATIVE_GROUPS = 5  # groups with both outcomes needed for the within-prompt score
PROMPT_ECHO_LIMIT = 0.5  # share of a gram's completions whose own prompt has it: task content
ABSORBED_SHARE = 0.9  # a gram seen inside one longer gram this often is represented by the longer one


# ---------------------------------------------------------------------------------------------
# Text → grams


def word_runs(text: str) -> list[list[str]]:
    """Lowercased words of `text`, split where a gram cannot continue.

    "Wait, let me check: 3+4 = 7." → [["wait", "let", "me", "check"], ["3"], ["4"], ["7"]]
    """
    runs: list[list[str]] = []
    current: list[str] = []
    last_end = 0
    for m in WORD_RE.finditer(text):
        if current and not _JOINABLE.fullmatch(text, last_end, m.start()):
            runs.append(current)
            current = []
        current.append(m.group().lower().replace("’", "'"))
        last_end = m.end()
    if current:
        runs.append(current)
    return runs


def text_grams(text: str, n_min: int, n_max: int) -> set[str]:
    """Every word n-gram (n_min ≤ n ≤ n_max) of `text` that stays inside one run, space-joined."""
    out: set[str] = set()
    for run in word_runs(text):
        for n in range(n_min, min(n_max, len(run)) + 1):
            for i in range(len(run) - n + 1):
                out.add(" ".join(run[i : i + n]))
    return out


def has_digit(gram: str) -> bool:
    return any(ch.isdigit() for ch in gram)


# ---------------------------------------------------------------------------------------------
# The score


def cmh_z(tables: Iterable[tuple[int, int, int, int]]) -> float:
    """Cochran–Mantel–Haenszel z over 2×2 tables (a, b, c, d); 0.0 when no table has variance.

        z = Σ (a − E) / √Σ V,   E = (a+b)(a+c)/n,   V = (a+b)(c+d)(a+c)(b+d) / (n²(n−1))

    >>> round(cmh_z([(8, 2, 2, 8)]), 3)    # one table: the two-proportion z with n−1 in the variance
    2.615
    """
    num, var = 0.0, 0.0
    for a, b, c, d in tables:
        n = a + b + c + d
        if n < 2:
            continue
        num += a - (a + b) * (a + c) / n
        var += (a + b) * (c + d) * (a + c) * (b + d) / (n * n * (n - 1))
    return num / math.sqrt(var) if var > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Generation:
    """One logged completion, reduced to what mining needs."""

    text: str
    correct: bool
    group: tuple[str, Any, str]  # (source file, step, prompt): completions of one prompt at one step
    prompt: str = ""
    truncated: bool = False  # the log kept only the start of the text


def generation_files(inputs: Sequence[str]) -> list[Path]:
    """emergence/generations.jsonl of each input: a run dir, a campaign dir (every run under runs/),
    a generations.jsonl file, or a glob of those. RetrainError naming the input when one has none."""
    files: list[Path] = []
    for spec in inputs:
        paths = [Path(p) for p in sorted(glob.glob(spec))] if any(ch in spec for ch in "*?[") else [Path(spec)]
        if not paths:
            raise RetrainError(f"{spec}: no path matches this pattern; pass run dirs or campaign dirs")
        for path in paths:
            files.extend(_files_of(path))
    unique = list(dict.fromkeys(f.resolve() for f in files))
    return unique


def _files_of(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix != ".jsonl":
            raise RetrainError(
                f"{path}: not a JSONL file; pass a run dir (with emergence/generations.jsonl) or a campaign dir"
            )
        return [path]
    if not path.is_dir():
        raise RetrainError(f"{path}: no such run or campaign directory")
    own = path / "emergence" / "generations.jsonl"
    if own.is_file():
        return [own]
    if (path / "runs").is_dir():
        found = sorted(p for p in (path / "runs").glob("*/emergence/generations.jsonl") if p.is_file())
        if found:
            return found
        raise RetrainError(
            f"{path}: no run under runs/ has emergence/generations.jsonl yet (runs not started, "
            "or [logging] log_generations = false)"
        )
    raise RetrainError(
        f"{path}: neither a run dir (no emergence/generations.jsonl) nor a campaign dir (no runs/); "
        "runs log completions unless [logging] log_generations = false"
    )


def read_generations(inputs: Sequence[str]) -> list[Generation]:
    """Every usable row of the inputs' generations.jsonl (rows without a completion text or an outcome
    are skipped; malformed lines are skipped with a warning by `read_jsonl`)."""
    from retrain.analysis.load import read_jsonl

    out: list[Generation] = []
    for path in generation_files(inputs):
        for row in read_jsonl(path):
            text = row.get("completion")
            if not isinstance(text, str):
                continue
            correct = row.get("correct")
            if not isinstance(correct, bool):
                reward = row.get("reward")
                if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
                    continue
                correct = reward > CORRECT_THRESHOLD
            prompt = row.get("prompt") if isinstance(row.get("prompt"), str) else ""
            full = row.get("completion_chars")
            truncated = isinstance(full, int) and full > len(text)
            out.append(Generation(text, correct, (str(path), row.get("step"), prompt), prompt, truncated))
    return out


# ---------------------------------------------------------------------------------------------
# Mining


@dataclass(frozen=True)
class GramScore:
    gram: str
    support: int  # completions containing the gram
    share: float  # support / completions
    rate_with: float  # correct share of the completions with the gram
    rate_without: float  # ... and without it
    z: float  # CMH z (see the module docstring); 0 when there is no contrast
    prompt_echo: float  # share of its completions whose own prompt contains it


@dataclass
class MiningResult:
    grams: list[GramScore]  # chosen, best first
    completions: int
    correct: int
    groups: int
    informative_groups: int  # groups with both a correct and an incorrect completion
    stratified: bool  # z compares completions of the same prompt (else: all completions as one table)
    candidates: int  # grams with enough support that are not task content
    truncated: int  # completions the log had cut (grams past the cut were not seen)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mine_grams(
    generations: Sequence[Generation],
    *,
    n_min: int = 2,
    n_max: int = 4,
    top: int = 20,
    min_support: int = 5,
    min_share: float = 0.01,
    min_z: float = 0.0,
    stratify: bool | None = None,
) -> MiningResult:
    """Rank word n-grams that mark correct completions (module docstring: counting, filters, score).

    `stratify`: None = within prompt groups when at least MIN_INFORMATIVE_GROUPS have both outcomes;
    True / False force it (False pools every completion into one table)."""
    if not 1 <= n_min <= n_max:
        raise RetrainError(f"--min-n {n_min} / --max-n {n_max}: need 1 <= min-n <= max-n")
    if top < 1 or min_support < 1 or not 0 <= min_share < 1:
        raise RetrainError("--top and --min-support must be >= 1 and --min-share in [0, 1)")
    n = len(generations)
    settings = {
        "n_min": n_min,
        "n_max": n_max,
        "top": top,
        "min_support": min_support,
        "min_share": min_share,
        "min_z": min_z,
    }
    if n < MIN_COMPLETIONS:
        raise RetrainError(
            f"only {n} completions with an outcome were logged; mining needs at least {MIN_COMPLETIONS}. "
            "Log whole groups ([logging] generations_per_prompt = 0), train longer, or pass more runs"
        )

    # Pass 1: document frequency of every gram that is not a number, to prune before grouping.
    df: Counter[str] = Counter()
    for g in generations:
        df.update(gram for gram in text_grams(g.text, n_min, n_max) if not has_digit(gram))
    floor = max(min_support, math.ceil(min_share * n))
    kept = {gram for gram, count in df.items() if count >= floor}
    kept -= absorbed_grams({gram: df[gram] for gram in kept}, n_min)

    # Pass 2: per kept gram, per group: (completions with it, correct ones among them); prompt echoes.
    group_sizes: Counter[tuple] = Counter(g.group for g in generations)
    group_correct: Counter[tuple] = Counter(g.group for g in generations if g.correct)
    informative = [k for k in group_sizes if 0 < group_correct[k] < group_sizes[k]]
    stratified = len(informative) >= MIN_INFORMATIVE_GROUPS if stratify is None else stratify
    cells: dict[str, dict[tuple, list[int]]] = defaultdict(dict)
    echoes: Counter[str] = Counter()
    prompt_grams: dict[str, set[str]] = {}
    for g in generations:
        grams = text_grams(g.text, n_min, n_max) & kept
        if not grams:
            continue
        in_prompt = prompt_grams.get(g.prompt)
        if in_prompt is None:
            in_prompt = prompt_grams[g.prompt] = text_grams(g.prompt, n_min, n_max)
        key = g.group if stratified else ()
        for gram in grams:
            cell = cells[gram].setdefault(key, [0, 0])
            cell[0] += 1
            cell[1] += g.correct
            echoes[gram] += gram in in_prompt

    total_correct = sum(g.correct for g in generations)
    sizes = group_sizes if stratified else {(): n}
    corrects = group_correct if stratified else {(): total_correct}
    scores = []
    for gram, by_group in cells.items():
        support = sum(m for m, _ in by_group.values())
        echo = echoes[gram] / support
        if echo >= PROMPT_ECHO_LIMIT:
            continue
        tables = []
        for k, (m1, a) in by_group.items():
            c1 = corrects[k]
            tables.append((a, c1 - a, m1 - a, sizes[k] - c1 - (m1 - a)))
        correct_with = sum(a for _, a in by_group.values())
        scores.append(
            GramScore(
                gram=gram,
                support=support,
                share=support / n,
                rate_with=correct_with / support,
                rate_without=(total_correct - correct_with) / (n - support) if n > support else float("nan"),
                z=cmh_z(tables),
                prompt_echo=echo,
            )
        )
    contrast = 0 < total_correct < n
    scores.sort(key=lambda s: (-s.z, -s.support, s.gram) if contrast else (-s.support, s.gram))
    chosen: list[GramScore] = []
    for s in scores:
        if len(chosen) == top:
            break
        if contrast and s.z <= min_z:
            break
        if any(_overlaps(s.gram, c.gram) for c in chosen):
            continue
        chosen.append(s)

    notes = _notes(n, total_correct, stratified, len(informative), generations, contrast)
    return MiningResult(
        grams=chosen,
        completions=n,
        correct=total_correct,
        groups=len(group_sizes),
        informative_groups=len(informative),
        stratified=stratified,
        candidates=len(scores),
        truncated=sum(g.truncated for g in generations),
        settings=settings,
        notes=notes,
    )


def absorbed_grams(support: dict[str, int], n_min: int, share: float = ABSORBED_SHARE) -> set[str]:
    """Grams that almost only occur inside one longer gram: g is absorbed when a gram one word longer
    that contains it has support ≥ share · support(g) ("by subtracting" inside "check by subtracting").

    The longer gram then stands for both: it marks the same completions and says more. A sub-gram that
    also occurs elsewhere ("let me" in "let me think" and "let me verify") keeps its own entry.

    >>> sorted(absorbed_grams({"check by": 10, "by subtracting": 10, "check by subtracting": 10}, 2))
    ['by subtracting', 'check by']
    """
    out = set()
    for gram, count in support.items():
        words = gram.split()
        if len(words) - 1 < n_min:
            continue
        for sub in (" ".join(words[1:]), " ".join(words[:-1])):
            if sub in support and count >= share * support[sub]:
                out.add(sub)
    return out


def _overlaps(a: str, b: str) -> bool:
    """One gram is a contiguous word sequence of the other ("let me" in "wait let me")."""
    return f" {a} " in f" {b} " or f" {b} " in f" {a} "


def _notes(
    n: int, correct: int, stratified: bool, informative: int, generations: Sequence[Generation], contrast: bool
) -> list[str]:
    notes = []
    if not contrast:
        outcome = "correct" if correct == n else "incorrect"
        notes.append(f"every completion is {outcome}: there is no contrast, so grams are ranked by frequency alone")
    elif not stratified:
        notes.append(
            f"only {informative} prompt group(s) logged both a correct and an incorrect completion (need "
            f"{MIN_INFORMATIVE_GROUPS}), so z compares completions across prompts and an easy prompt's phrasing can "
            "look like a reasoning move; log whole groups with [logging] generations_per_prompt = 0"
        )
    truncated = sum(g.truncated for g in generations)
    if truncated:
        notes.append(
            f"{truncated} of {n} completions were cut by [logging] generation_max_chars; grams after the cut "
            "were not counted (0 keeps the full text)"
        )
    return notes


# ---------------------------------------------------------------------------------------------
# Output


def render_table(result: MiningResult) -> str:
    """The ranked grams as an aligned text table, with what was counted and any caveats."""
    head = (
        f"{result.completions} completions ({result.correct} correct) in {result.groups} prompt groups, "
        f"{result.informative_groups} with both outcomes; {result.candidates} candidate grams; score: "
        + ("CMH z within prompt groups" if result.stratified else "two-proportion z over all completions")
    )
    lines = [head]
    lines += [f"note: {note}" for note in result.notes]
    if not result.grams:
        return "\n".join(lines + ["no gram passed the filters"]) + "\n"
    width = max(len("gram"), *(len(s.gram) for s in result.grams))
    lines.append(
        f"{'rank':>4}  {'gram':<{width}}  {'in':>6}  {'share':>6}  {'correct with':>12}  {'without':>7}  {'z':>6}"
    )
    for i, s in enumerate(result.grams, 1):
        without = "n/a" if math.isnan(s.rate_without) else f"{s.rate_without:.0%}"
        lines.append(
            f"{i:>4}  {s.gram:<{width}}  {s.support:>6}  {s.share:>6.1%}  {s.rate_with:>12.0%}  "
            f"{without:>7}  {s.z:>6.2f}"
        )
    return "\n".join(lines) + "\n"


def render_snippet(result: MiningResult, sources: Sequence[str]) -> str:
    """A `[planning]` TOML table with the chosen grams, one per line with its numbers as a comment."""
    import json

    score = (
        "Cochran-Mantel-Haenszel z of 'gram present' vs 'correct' within prompt groups"
        if result.stratified
        else "two-proportion z of 'gram present' vs 'correct' over all completions"
    )
    lines = [
        "# generated by retrain grams mine from " + ", ".join(sources),
        f"# {result.completions} completions ({result.correct} correct); score: {score}.",
        "# Check what they mark with `retrain grams check CONFIG --grams-file THIS_FILE`, then paste into the config.",
        "[planning]",
        "strategic_grams = [",
    ]
    for s in result.grams:
        # JSON string escapes are valid in TOML basic strings.
        lines.append(f"    {json.dumps(s.gram, ensure_ascii=False)},  # z = {s.z:.2f}, in {s.share:.1%} of completions")
    lines.append("]")
    return "\n".join(lines) + "\n"
