"""Write sst2_tiny.jsonl: 400 short movie-review-like sentences for offline smoke runs.

Deterministic (a fixed seed and fixed word lists), balanced (200 negative = label 0, 200
positive = label 1), and learnable by a tiny model: the sentiment is carried by the
adjectives, which never cross classes, while subjects, openers and sentence shapes are
shared. The label words " terrible" / " great" never occur in a sentence.

Usage: python examples/data/make_sst2_tiny.py [OUT]   (default: next to this script)
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 0
PER_CLASS = 200
SUBJECTS = [
    "the film", "this movie", "the acting", "the plot", "the story", "the script",
    "the cast", "the ending", "the music", "the dialogue", "the lead", "the pacing",
    "the camera work", "the humor", "the sequel", "the finale",
]  # fmt: skip
ADJECTIVES = {
    0: [
        "dull", "boring", "awful", "clumsy", "tedious", "bland", "messy", "lifeless",
        "stale", "painful", "silly", "forgettable", "flat", "weak",
    ],
    1: [
        "wonderful", "moving", "brilliant", "delightful", "charming", "beautiful",
        "funny", "clever", "gripping", "superb", "warm", "fresh", "smart", "lovely",
    ],
}  # fmt: skip
OPENERS = ["", "", "", "honestly, ", "overall, ", "to me, ", "in the end, ", "sadly or not, "]
SHAPES = [
    "{o}{s} was {a}.",
    "{o}{s} is {a} and {b}.",
    "{o}i found {s} {a}.",
    "{o}a {a} film with a {b} cast.",
    "{o}{s} felt {a} from start to finish.",
    "{o}what a {a} and {b} ride.",
]


def sentences(seed: int = SEED, per_class: int = PER_CLASS) -> list[dict[str, object]]:
    """``per_class`` unique sentences per label, classes interleaved in a seeded order."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for label in (0, 1):
        seen: set[str] = set()
        while len(seen) < per_class:
            a, b = rng.sample(ADJECTIVES[label], 2)
            opener, shape = rng.choice(OPENERS), rng.choice(SHAPES)
            text = shape.format(o=opener, s=rng.choice(SUBJECTS), a=a, b=b)
            text = text[0].upper() + text[1:]
            if text not in seen:
                seen.add(text)
                rows.append({"text": text, "label": label})
    rng.shuffle(rows)
    return rows


def main(out: Path) -> None:
    lines = [json.dumps(row) for row in sentences()]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("sst2_tiny.jsonl"))
