import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED = os.path.join(ROOT, "data", "shakespeare.txt")
TINYSHAKESPEARE = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"))


@pytest.fixture
def small_text(tmp_path):
    """About 30,000 characters of the bundled corpus (real text), as a file."""
    with open(BUNDLED, encoding="utf-8") as f:
        text = f.read(30_000)
    path = tmp_path / "small.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def tinyshakespeare():
    if not os.path.exists(TINYSHAKESPEARE):
        pytest.skip(f"{TINYSHAKESPEARE} is not here (it is not shipped with charrnn)")
    return TINYSHAKESPEARE
