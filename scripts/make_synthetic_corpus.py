"""Write a synthetic English-like -> German-like parallel corpus with real structure.

The target language differs from the source by rules a translation model has to learn:
  * reordering: adjectives follow their noun; the verb goes to the end of its clause (SOV);
  * agreement: determiners and adjective endings agree with the noun's gender and number,
    verb endings agree with the subject's number;
  * varied lengths: 0-2 adjectives, optional prepositional phrases, clauses joined by "and".
Every source sentence has exactly one correct translation, so BLEU near 100 is reachable.

Usage:
    python scripts/make_synthetic_corpus.py --out-dir data/synthetic --train 20000
writes {train,valid,test}.{en,de}.
"""

import argparse
import logging
import random
from pathlib import Path

logger = logging.getLogger("make_synthetic_corpus")

# English noun -> (German stem, gender, German plural).
NOUNS = {
    "dog": ("hund", "m", "hunde"),
    "cat": ("katze", "f", "katzen"),
    "house": ("haus", "n", "haeuser"),
    "man": ("mann", "m", "maenner"),
    "woman": ("frau", "f", "frauen"),
    "child": ("kind", "n", "kinder"),
    "car": ("wagen", "m", "wagen"),
    "street": ("strasse", "f", "strassen"),
    "book": ("buch", "n", "buecher"),
    "tree": ("baum", "m", "baeume"),
    "flower": ("blume", "f", "blumen"),
    "boat": ("boot", "n", "boote"),
    "bird": ("vogel", "m", "voegel"),
    "door": ("tuer", "f", "tueren"),
    "window": ("fenster", "n", "fenster"),
    "teacher": ("lehrer", "m", "lehrer"),
    "city": ("stadt", "f", "staedte"),
    "horse": ("pferd", "n", "pferde"),
}
EN_PLURAL = {"man": "men", "woman": "women", "child": "children", "city": "cities"}
ADJECTIVES = {
    "big": "gross",
    "small": "klein",
    "old": "alt",
    "new": "neu",
    "red": "rot",
    "green": "gruen",
    "happy": "froh",
    "fast": "schnell",
    "quiet": "still",
    "young": "jung",
    "dark": "dunkel",
    "warm": "warm",
}
VERBS = {  # English base form -> German stem
    "see": "seh",
    "like": "mag",
    "find": "find",
    "follow": "folg",
    "paint": "mal",
    "visit": "besuch",
    "watch": "beobacht",
    "carry": "trag",
    "call": "ruf",
    "hear": "hoer",
}
PREPOSITIONS = {"in": "in", "near": "bei", "behind": "hinter", "with": "mit"}
DETERMINERS = {  # (definite?, gender or "pl") -> German determiner
    (True, "m"): "der",
    (True, "f"): "die",
    (True, "n"): "das",
    (True, "pl"): "die",
    (False, "m"): "ein",
    (False, "f"): "eine",
    (False, "n"): "ein",
    (False, "pl"): "einige",
}
ADJ_ENDING = {"m": "er", "f": "e", "n": "es", "pl": "en"}


def noun_phrase(rng: random.Random) -> tuple[list[str], list[str], bool]:
    """(English words, German words, plural?) of one noun phrase."""
    noun = rng.choice(sorted(NOUNS))
    stem, gender, plural_form = NOUNS[noun]
    plural, definite = rng.random() < 0.3, rng.random() < 0.6
    adjectives = rng.sample(sorted(ADJECTIVES), rng.choice([0, 0, 1, 1, 2]))
    key = "pl" if plural else gender
    en_det = "the" if definite else ("some" if plural else "a")
    en = [en_det, *adjectives, EN_PLURAL.get(noun, noun + "s") if plural else noun]
    de = [DETERMINERS[(definite, key)], plural_form if plural else stem]
    de += [
        ADJECTIVES[a] + ADJ_ENDING[key] for a in adjectives
    ]  # adjectives follow the noun
    return en, de, plural


def clause(rng: random.Random) -> tuple[list[str], list[str]]:
    subj_en, subj_de, plural = noun_phrase(rng)
    obj_en, obj_de, _ = noun_phrase(rng)
    verb = rng.choice(sorted(VERBS))
    en = subj_en + [verb if plural else verb + "s"] + obj_en
    de = subj_de + obj_de
    if rng.random() < 0.35:
        prep = rng.choice(sorted(PREPOSITIONS))
        pp_en, pp_de, _ = noun_phrase(rng)
        en += [prep] + pp_en
        de += [PREPOSITIONS[prep]] + pp_de
    de.append(
        VERBS[verb] + ("en" if plural else "t")
    )  # verb last, agreeing with subject
    return en, de


def sentence(rng: random.Random) -> tuple[str, str]:
    en, de = clause(rng)
    while rng.random() < 0.3:
        more_en, more_de = clause(rng)
        en, de = en + ["and"] + more_en, de + ["und"] + more_de
    return " ".join(en), " ".join(de)


def write_corpus(out_dir: Path, sizes: dict, seed: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    seen = set()
    for split, size in sizes.items():
        pairs = []
        while len(pairs) < size:
            pair = sentence(rng)
            if pair[0] not in seen:  # no test sentence is also a training sentence
                seen.add(pair[0])
                pairs.append(pair)
        for lang, column in (("en", 0), ("de", 1)):
            text = "\n".join(p[column] for p in pairs) + "\n"
            (out_dir / f"{split}.{lang}").write_text(text, encoding="utf-8")
        logger.info("%s: %d sentence pairs", split, size)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        required=True,
        help="folder for {train,valid,test}.{en,de}",
    )
    parser.add_argument(
        "--train", type=int, default=20000, help="training pairs (default 20000)"
    )
    parser.add_argument(
        "--valid", type=int, default=500, help="validation pairs (default 500)"
    )
    parser.add_argument(
        "--test", type=int, default=500, help="test pairs (default 500)"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = parser.parse_args(argv)
    if min(args.train, args.valid, args.test) < 1:
        parser.error("--train, --valid and --test must all be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    write_corpus(
        args.out_dir,
        {"train": args.train, "valid": args.valid, "test": args.test},
        args.seed,
    )


if __name__ == "__main__":
    main()
