"""Build the surname-by-language data set (data/names.{train,valid,test}.txt) from faker's person providers.

    python data/build_names.py            # rewrites the three files; needs: pip install faker

Each line is fastText's format, ``__label__LANG Surname``. The surnames of each language are the union
of its locales' ``last_names`` (and ``last_names_male``/``_female`` where a locale splits them); a
surname found under more than one language is left out, so every line has one right answer. Each
language's surnames are shuffled with a fixed seed and split 80/10/10 into train, valid and test, so
the files are the same on every run with the same faker version (recorded in data/README.md).
"""

import importlib
import os

import numpy as np

LANGUAGES = {  # label: the faker locales whose surnames it takes
    "cs": ["cs_CZ"],
    "de": ["de_DE", "de_AT"],
    "en": ["en_US", "en_GB"],
    "es": ["es_ES", "es_MX"],
    "et": ["et_EE"],
    "fi": ["fi_FI"],
    "fr": ["fr_FR"],
    "ga": ["ga_IE"],
    "hr": ["hr_HR"],
    "it": ["it_IT"],
    "nl": ["nl_NL"],
    "pt": ["pt_BR", "pt_PT"],
    "sk": ["sk_SK"],
    "sv": ["sv_SE"],
}
SPLITS = (("train", 0.8), ("valid", 0.1), ("test", 0.1))
SEED = 15


def person_names(locale, kind="last"):
    """A locale's ``kind`` ("last" or "first") names: faker's ``{kind}_names`` and, where a locale splits
    them, ``{kind}_names_male`` and ``_female``, stripped."""
    provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
    found = set()
    for attr in (f"{kind}_names", f"{kind}_names_male", f"{kind}_names_female"):
        value = getattr(provider, attr, None)
        if value is not None and not isinstance(value, property):
            found.update(name.strip() for name in value if name.strip())
    return found


def main():
    by_language = {lang: set().union(*(person_names(loc) for loc in locales)) for lang, locales in LANGUAGES.items()}
    seen = {}
    for names in by_language.values():
        for name in names:
            seen[name] = seen.get(name, 0) + 1
    rng = np.random.default_rng(SEED)
    lines = {split: [] for split, _ in SPLITS}
    for lang, names in sorted(by_language.items()):
        unique = sorted(n for n in names if seen[n] == 1)
        order = rng.permutation(len(unique))
        start = 0
        for i, (split, frac) in enumerate(SPLITS):
            end = len(unique) if i == len(SPLITS) - 1 else start + round(frac * len(unique))
            lines[split] += [f"__label__{lang} {unique[j]}" for j in order[start:end]]
            start = end
        print(f"{lang}: {len(unique)} surnames ({len(names) - len(unique)} shared with another language left out)")
    here = os.path.dirname(os.path.abspath(__file__))
    for split, _ in SPLITS:
        rows = [lines[split][j] for j in rng.permutation(len(lines[split]))]
        with open(os.path.join(here, f"names.{split}.txt"), "w", encoding="utf-8", newline="\n") as f:
            f.write("\n".join(rows) + "\n")
        print(f"names.{split}.txt: {len(rows)} lines")


if __name__ == "__main__":
    main()
