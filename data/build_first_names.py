"""Build the first-names list (data/first_names.txt) from faker's person providers.

    python data/build_first_names.py      # rewrites the file; needs: pip install faker

One name a line: the union of ``first_names`` (and ``first_names_male``/``_female`` where a locale splits
them) of the locales below, each name once, only names of letters (a hyphen or an apostrophe inside
allowed: Jean-Luc, D'Arcy), shuffled with a fixed seed so that the file's tail is a fair sample of it. The
file is the same on every run with the same faker version (recorded in data/README.md).
"""

import os
import re

import numpy as np
from build_names import person_names  # beside this script

LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "sv_SE", "fi_FI", "pl_PL", "cs_CZ",
           "pt_BR"]
NAME = re.compile(r"^[^\W\d_]+(?:['-][^\W\d_]+)*$")  # letters, with inner hyphens or apostrophes
SEED = 32


def first_names(locale):
    return {name for name in person_names(locale, "first") if NAME.match(name)}


def main():
    names = sorted(set().union(*(first_names(locale) for locale in LOCALES)))
    order = np.random.default_rng(SEED).permutation(len(names))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "first_names.txt")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(names[i] + "\n" for i in order))
    print(f"{path}: {len(names):,} names")


if __name__ == "__main__":
    main()
