"""The documentation: the command reference is the commands', the README stays short, every relative link
resolves, the documents carry no traces of how they were developed, and the README's Python runs."""

import re
import unicodedata
from pathlib import Path

import pytest

from charrnn.cli.reference import render

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "python -m charrnn.cli.reference > docs/cli.md"
README_MAX_LINES = 300

# documents whose links must resolve
LINKED = ["README.md", "CONTRIBUTING.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
# documents and scripts that must read as the project's, not as a development log
CLEAN = sorted({*LINKED, "data/README.md",
                *(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").rglob("*")
                  if p.is_file() and p.suffix in (".py", ".sh", ".md") and "__pycache__" not in p.parts)})

TRACES = [
    (re.compile(r"\bissues? #?\d+|#\d{2,}\b", re.IGNORECASE), "an issue number"),
    (re.compile(r"\bsessions?\b|\bworktrees?\b", re.IGNORECASE), "a development word"),
    (re.compile(r"/work/|/tmp/|/root/"), "a development machine's path"),
]


def read(relative):
    return (ROOT / relative).read_text(encoding="utf-8")


def test_cli_reference_is_generated_from_the_commands():
    assert read("docs/cli.md") == render(), f"docs/cli.md differs from the commands: run `{REGENERATE}`"


def test_readme_is_short():
    lines = read("README.md").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, more than {README_MAX_LINES}: move some to docs/"


def _without_code(text):
    """Markdown without fenced code blocks and `code` spans, where brackets are not links."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(text):
    """The anchors GitHub gives a document's headings."""
    seen, anchors = {}, set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*$", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S),
                              flags=re.MULTILINE):
        slug = "".join(c for c in heading.lower() if c in " -_" or unicodedata.category(c)[0] in "LN")
        slug = slug.replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


@pytest.mark.parametrize("document", LINKED)
def test_relative_links_resolve(document):
    source = ROOT / document
    broken = []
    for target in re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", _without_code(read(document))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve() if path else source
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved.read_text(encoding="utf-8")):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{document}: broken links: {', '.join(broken)}"


@pytest.mark.parametrize("document", CLEAN)
def test_no_development_traces(document):
    found = []
    for number, line in enumerate(read(document).splitlines(), 1):
        for pattern, what in TRACES:
            match = pattern.search(line)
            if match:
                found.append(f"line {number}: {what} ({match.group(0)!r})")
    assert not found, f"{document}: " + "; ".join(found)


def _python_block(document, after):
    """The first ```python block of ``document`` after the text ``after``."""
    text = read(document)
    return text[text.index(after):].split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    """The README's Python API example, run as written, on a small corpus and a short budget."""
    block = _python_block("README.md", "## Python API")
    (tmp_path / "data").mkdir()
    text = read("data/shakespeare.txt")[:20_000]
    (tmp_path / "data" / "shakespeare.txt").write_text(text, encoding="utf-8")
    (tmp_path / "held_out.txt").write_text(text[:2_000], encoding="utf-8")
    assert "max_time=60" in block
    small = "max_steps=4, hidden_size=16, batch_size=4, seq_length=16, eval_every=2, sample_length=0, workers=1"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(block.replace("max_time=60", small), namespace)
    assert (tmp_path / "ck" / "latest.npz").exists() and namespace["ckpt"].meta["step"] >= 2


def test_api_models_example_runs():
    """docs/api.md's model example runs as written."""
    namespace = {}
    exec(_python_block("docs/api.md", "## Models"), namespace)
    assert namespace["logits"].shape == (namespace["model"].config.vocab_size,)


def test_architecture_names_every_module():
    """docs/architecture.md's module table has a row for every module of the package."""
    table = set(re.findall(r"`([\w/]+\.(?:py|html))`", read("docs/architecture.md")))
    package = ROOT / "charrnn"
    modules = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py")) if "__pycache__" not in p.parts]
    missing = [m for m in modules if m not in table and not (m.endswith("/__init__.py"))]
    assert not missing, f"docs/architecture.md's module table lacks: {', '.join(missing)}"


def test_every_document_is_reachable_from_the_readme():
    """Every page in docs/ is linked from the README, so none is orphaned."""
    readme = read("README.md")
    missing = [p for p in LINKED if p.startswith("docs/") and f"({p})" not in readme]
    assert not missing, f"README.md links to none of: {', '.join(missing)}"



def test_architecture_data_flow_names_exist():
    """Every ``module.py:name`` docs/architecture.md's data flow names is defined in that module (a class,
    a function, or a method of the class named)."""
    missing = []
    for module, name in re.findall(r"`([\w/]+\.py):([\w.]+)`", read("docs/architecture.md")):
        path = ROOT / "charrnn" / module
        source = path.read_text(encoding="utf-8") if path.exists() else ""
        for part in name.split("."):
            if not re.search(rf"^\s*(?:def|class) {part}\b|^{part} = ", source, flags=re.MULTILINE):
                missing.append(f"{module}:{name}")
                break
    assert not missing, f"docs/architecture.md names what does not exist: {', '.join(missing)}"


def test_the_old_module_paths_api_md_names_still_import():
    """docs/api.md once named charrnn.evaluate and charrnn.sample; code written against them still runs."""
    from charrnn.evaluate import evaluate_text, score_line_batch
    from charrnn.sample import stream_samples

    from charrnn.inference import evaluate, sample

    assert (evaluate_text, score_line_batch, stream_samples) == (evaluate.evaluate_text, evaluate.score_line_batch,
                                                                 sample.stream_samples)


SEED_EXAMPLE = re.compile(r'--seed "([^"]+)"|"seed": "([^"]+)"|seed="([^"]+)"|id="seed"[^>]*placeholder="([^"]+)"')


def test_every_seed_example_is_one_the_bundled_corpus_holds():
    """Help texts, documents, docstrings and the server's page prime with the same text, a speaker's name as
    data/shakespeare.txt writes it."""
    sources = [*CLEAN, "docs/cli.md", "charrnn/serve/page.html",
               *(str(p.relative_to(ROOT)) for p in (ROOT / "charrnn").rglob("*.py"))]
    seeds = {(path, "".join(match)) for path in sources for match in SEED_EXAMPLE.findall(read(path))}
    assert len(seeds) >= 10 and {seed for _, seed in seeds} == {"Romeo."}, sorted(seeds)
    assert "\nRomeo.\n" in read("data/shakespeare.txt")
