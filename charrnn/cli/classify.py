"""``charrnn classify train|test|predict``: text classification in fastText's conventions, over the library."""

import io
import json
import os
import sys
from dataclasses import asdict, fields

import click
from click.core import ParameterSource
from rich.table import Table

from ..classify.data import FORMATS, LABEL_PREFIX, read_labelled, split_labels
from ..classify.metrics import evaluate_predictions
from ..classify.model import LOSSES, POOLS, ClassifierConfig
from ..classify.predict import TextClassifier, load_classifier
from ..classify.train import CLASS_WEIGHTS, LR_SCHEDULES, ClassifyTrainConfig, train_classifier, train_config_from
from .errors import user_errors
from .options import CONTEXT_SETTINGS, FiniteFloatRange, declare, explicit, training_options
from .report import ClassifyReporter, console, resume_command

MODEL_DEFAULTS, TRAIN_DEFAULTS = ClassifierConfig(0, 0), ClassifyTrainConfig()  # the options' defaults, defined once


@click.group(context_settings=CONTEXT_SETTINGS)
def classify():
    """Classify text with a bidirectional character encoder, in fastText's conventions.

    \b
    Example:
      charrnn classify train data/names.train.txt --valid data/names.valid.txt
      charrnn classify test classifier data/names.test.txt
      echo Rossi | charrnn classify predict classifier - --prob
      charrnn classify train tagged.txt --loss ova
      charrnn classify predict classifier tagged.test.txt -k 3 --threshold 0.5
    """

K_DEFAULT = "1; a model trained with --loss ova: every label"
THRESHOLD_DEFAULT = "0; --loss ova: 0.5, as its training scores it"


def _cut(clf, k, threshold):
    """-k and --threshold as given, else the model's default (TextClassifier.prediction_cut)."""
    default_k, default_threshold = clf.prediction_cut()
    return (default_k if k is None else k), (default_threshold if threshold is None else threshold)


CLASSIFY_OPTIONS = {
    "fmt": {"flags": ("--format",), "type": click.Choice(FORMATS), "default": TRAIN_DEFAULTS.format,
            "show_default": True,
            "help": "fasttext: __label__NAME tokens, then the text; tsv: LABEL<TAB>TEXT (labels comma-separated)."},
    "valid_path": {"flags": ("--valid",), "type": click.Path(exists=True, dir_okay=False, readable=True),
                   "help": "Validation file [default: hold out --valid-frac of FILE]."},
    "valid_frac": {"type": FiniteFloatRange(0, 1, max_open=True), "default": TRAIN_DEFAULTS.valid_frac,
                   "show_default": True, "help": "Fraction of FILE held out for validation."},
    "bidirectional": {"flags": ("--bidirectional/--no-bidirectional",), "default": MODEL_DEFAULTS.bidirectional,
                      "show_default": True, "help": "Also read each text backwards."},
    "loss": {"type": click.Choice(LOSSES), "default": MODEL_DEFAULTS.loss, "show_default": True,
             "help": "softmax: one distribution over the labels; ova: one sigmoid per label (fastText's one-vs-all), "
             "independent probabilities, for lines with several labels (predict -k K --threshold T)."},
    "pool": {"type": click.Choice(POOLS), "default": MODEL_DEFAULTS.pool, "show_default": True,
             "help": "last: the final states joined; mean, max: over the text's positions."},
    "class_weight": {"type": click.Choice(CLASS_WEIGHTS), "default": TRAIN_DEFAULTS.class_weight, "show_default": True,
                     "help": "balanced: each label's examples weigh N / (labels x its count), for unbalanced labels."},
    "char_dropout": {"type": FiniteFloatRange(0, 1, max_open=True), "default": TRAIN_DEFAULTS.char_dropout,
                     "show_default": True,
                     "help": "Replace this fraction of training characters by the unknown one (so unseen characters "
                     "are learnt)."},
}


def _classifier_default(name):
    """The classifier's default for a shared training option: its configs' (``--eval-every``: once an epoch)."""
    if name == "eval_every":
        return {"note": "[default: once per epoch]"}
    for defaults in (TRAIN_DEFAULTS, MODEL_DEFAULTS):
        if hasattr(defaults, name) and getattr(defaults, name) is not None:
            return {"default": getattr(defaults, name), "show_default": True}
    return {}


@classify.command(context_settings=CONTEXT_SETTINGS)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@declare(CLASSIFY_OPTIONS)
@training_options(_classifier_default, types={"lr_schedule": click.Choice(LR_SCHEDULES)})
@click.pass_context
def train(ctx, file, valid_path, resume, overwrite, quiet, **options):
    """Train a classifier on FILE: one text per line, its labels first.

    Writes latest.npz, best.npz (best validation accuracy) and metrics.jsonl to --checkpoint-dir.

    \b
    Example:
      charrnn classify train data/names.train.txt --valid data/names.valid.txt --max-time 120
    """
    if valid_path is not None and ctx.get_parameter_source("valid_frac") is not ParameterSource.DEFAULT:
        raise click.UsageError("--valid-frac holds out part of FILE and --valid gives a validation file; "
                               "give one of them")
    options["format"] = options.pop("fmt")
    options["valid_frac"] = options.pop("valid_frac")
    model_names = {f.name for f in fields(ClassifierConfig)} - {"vocab_size", "num_classes"}
    train_names = {f.name for f in fields(ClassifyTrainConfig)}
    with user_errors():
        model_config = ClassifierConfig(0, 0, **{k: options[k] for k in model_names})
        if resume is not None:
            resume = resume or os.path.join(options["checkpoint_dir"], "latest.npz")
            meta = load_classifier(resume)[1]
            saved_loss = meta["model"].get("loss", MODEL_DEFAULTS.loss)
            if explicit(ctx, "loss") and options["loss"] != saved_loss:
                raise click.UsageError(f"--loss {options['loss']}: {resume} was trained with --loss {saved_loss}, "
                                       "which --resume keeps")
            given = {k: v for k, v in options.items() if k in train_names and explicit(ctx, k)}
            config = train_config_from(meta.get("train", {}), given)
        else:
            config = ClassifyTrainConfig(**{k: v for k, v in options.items() if k in train_names})
        going_on = resume_command(["classify", "train"], [file], config.checkpoint_dir, TRAIN_DEFAULTS.checkpoint_dir,
                                  ["--valid", valid_path] if valid_path else [])
        reporter = ClassifyReporter(quiet, going_on)
        result = train_classifier(file, model_config, config, valid_path, resume, reporter, overwrite)
    if not quiet:
        best = f"{result.best_accuracy:.4f}" if result.best_accuracy is not None else "-"
        if result.best_exact_match is not None:
            best = f"{best}, exact label-set match {result.best_exact_match:.4f}"
        click.echo(f"stopped by {result.stop_reason} after {result.step:,} steps (epoch {result.epoch:.2f}) in "
                   f"{result.elapsed:.1f}s, {result.examples_per_sec:,.0f} texts/s; best validation accuracy {best}; "
                   f"checkpoints in {result.checkpoint_dir}"
                   + (f"; to go on: {going_on}" if result.interrupted_by is not None else ""))
    if result.interrupted_by is not None:
        ctx.exit(128 + result.interrupted_by)


@classify.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True, allow_dash=True))
@click.option("-k", "k", type=click.IntRange(min=1), default=None, show_default=K_DEFAULT,
              help="Predictions per line for P@K.")
@click.option("--threshold", type=FiniteFloatRange(0, 1), default=None, show_default=THRESHOLD_DEFAULT,
              help="Predict only labels of at least this probability.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="fasttext", show_default=True)
@click.option("--per-label", is_flag=True,
              help="Also precision, recall, F1, support per label, and a confusion matrix.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def test(checkpoint, file, k, threshold, fmt, per_label, as_json):
    """Score CHECKPOINT on the labelled FILE ('-': standard input): N, P@K, R@K (as fastText), accuracy, macro-F1
    and exact label-set match.

    A line's predictions are its K likeliest labels of probability at least --threshold (as predict prints
    them): P@K is the right ones among the predictions, R@K among the line's labels, and a line is an exact
    match when they are exactly its labels. Accuracy: the top prediction is one of the line's labels.

    A label the model never saw is reported on stderr and can never be predicted: a line with no other
    label is scored as wrong; a line that also has a known label is right if that one is predicted (a
    line is right when its top prediction is one of its labels). The confusion matrix has a row per
    line and gold label.

    \b
    Example:
      charrnn classify test classifier data/names.test.txt -k 2 --per-label
      charrnn classify test classifier tagged.test.txt -k 2 --threshold 0.5
    """
    with user_errors():
        clf = TextClassifier.load(checkpoint)
        k, threshold = _cut(clf, k, threshold)
        lines = read_labelled(file, fmt)
        report = evaluate_predictions(clf.predict_proba(lines.texts), lines.labels, clf.labels, k, threshold)
    if report["unseen_label_lines"] == report["n"]:
        unseen = report["unseen_labels"]
        listed = ", ".join(unseen[:5]) + (", ..." if len(unseen) > 5 else "")
        raise click.ClickException(f"{file}: none of its labels are the model's ({listed})")
    if report["unseen_label_lines"]:
        click.echo(f"warning: {report['unseen_label_lines']:,} lines have labels the model never saw: "
                   f"{', '.join(report['unseen_labels'][:10])}", err=True)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"N\t{report['n']}\nP@{k}\t{report['precision_at_k']:.3f}\nR@{k}\t{report['recall_at_k']:.3f}")
    click.echo(f"accuracy\t{report['accuracy']:.3f}\nmacro-F1\t{report['macro_f1']:.3f}")
    click.echo(f"exact-match\t{report['exact_match']:.3f}")
    if per_label:
        _print_per_label(report)


def _print_per_label(report):
    table = Table("label", "precision", "recall", "F1", "support")
    for name, v in sorted(report["per_label"].items(), key=lambda kv: -kv[1]["support"]):
        table.add_row(name, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", str(v["support"]))
    matrix = Table("gold \\ predicted", *report["confusion"]["labels"], title="confusion matrix")
    for name, row in zip(report["confusion"]["labels"], report["confusion"]["counts"]):
        matrix.add_row(name, *(str(c) if c else "." for c in row))
    out = console()
    out.print(table)
    out.print(matrix)


@classify.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("file", type=click.File("rb"), default="-")
@click.option("-k", "k", type=click.IntRange(min=1), default=None, show_default=K_DEFAULT, help="Labels per line.")
@click.option("--prob", is_flag=True, help="Follow each label with its probability.")
@click.option("--threshold", type=FiniteFloatRange(0, 1), default=None, show_default=THRESHOLD_DEFAULT,
              help="Print only labels of at least this probability.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="fasttext", show_default=True,
              help="How labels a line may start with are written (they are ignored).")
def predict(checkpoint, file, k, prob, threshold, fmt):
    """Print the K likeliest labels of each line of FILE (default: standard input), one line per line.

    Lines are answered as they arrive (labels they start with are ignored); an empty line gets an empty line.
    A model trained with --loss ova gives each label its own probability: -k K --threshold T prints every label
    of probability at least T (at most K of them).

    \b
    Example:
      charrnn classify predict classifier names.txt -k 3 --prob
    """
    with user_errors():
        clf = TextClassifier.load(checkpoint)
    k, threshold = _cut(clf, k, threshold)
    out, number = sys.stdout, 0
    for lines in _line_blocks(file):
        texts = []
        for raw in lines:
            number += 1
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r")
            except UnicodeDecodeError:
                name = getattr(file, "name", "<stdin>")
                raise click.ClickException(f"{name}: line {number}: not valid UTF-8") from None
            texts.append(split_labels(line, fmt)[1])
        _write_predictions(out, clf, texts, k, prob, threshold)


def _line_blocks(file, block=4096):
    """Lists of the input's lines (bytes, without their newline) as they arrive: each read takes what is
    there at once (a pipe or terminal: what was written so far; a file: 64 KiB), so lines that trickle in
    are answered as they come and a fast stream is batched. Streams without a descriptor: ``block`` lines."""
    try:
        fd = file.fileno()
    except (OSError, io.UnsupportedOperation, AttributeError):
        lines = file.read().split(b"\n")
        lines = lines[:-1] if lines and lines[-1] == b"" else lines
        for i in range(0, len(lines), block):
            yield lines[i : i + block]
        return
    pending = b""
    while data := os.read(fd, 1 << 16):
        *lines, pending = (pending + data).split(b"\n")
        if lines:
            yield lines
    if pending:
        yield [pending]


def _write_predictions(out, clf, texts, k, prob, threshold):
    if not texts:
        return
    for pairs in clf.predict(texts, k, threshold):
        out.write(" ".join(f"{LABEL_PREFIX}{name} {p:.5f}" if prob else f"{LABEL_PREFIX}{name}"
                           for name, p in pairs) + "\n")
    out.flush()


@classify.command(context_settings=CONTEXT_SETTINGS)
@click.argument("checkpoint", type=click.Path(exists=True))
def info(checkpoint):
    """Describe a classifier CHECKPOINT: model, labels, vocabulary, training position.

    \b
    Example:
      charrnn classify info classifier
    """
    with user_errors():
        clf, meta, _ = load_classifier(checkpoint)
    table = Table(title=checkpoint, show_header=False)
    for key, value in asdict(clf.model.config).items():
        table.add_row(key, str(value))
    table.add_row("labels", f"{len(clf.labels)}: {' '.join(clf.labels.names)[:200]}")
    table.add_row("vocabulary", f"{len(clf.vocab)} characters (and one for the unknown)")
    table.add_row("parameters", f"{clf.model.num_params():,}")
    table.add_row("position", f"step {meta.get('step')}: epoch {meta.get('epoch')}, batch {meta.get('batch')}")
    best = meta.get("best_accuracy")
    table.add_row("best validation accuracy", f"{best:.4f}" if best is not None else "-")
    if meta.get("best_exact_match") is not None:
        table.add_row("best exact label-set match", f"{meta['best_exact_match']:.4f}")
    console().print(table)
