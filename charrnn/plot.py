"""Loss curves from metrics.jsonl (matplotlib is an optional extra: ``pip install charrnn[plot]``)."""

import json
import math


def read_metrics(path):
    """The records of a metrics.jsonl file; raise ValueError naming a bad line."""
    with open(path) as f:
        records = []
        for number, line in enumerate(f, start=1):
            try:
                records.append(json.loads(line))
            except ValueError:
                raise ValueError(f"{path}: line {number} is not JSON") from None
    if not records:
        raise ValueError(f"{path}: no training records yet")
    return records


def plot_metrics(metrics_path, output):
    """Draw train and validation loss against step and write the figure to ``output``: nats per character
    for a language model, nats per text (and validation accuracy in the title) for a classifier's run."""
    records = read_metrics(metrics_path)
    classifier = any("val_accuracy" in r for r in records)  # charrnn classify's metrics
    unit = "nats/text" if classifier else "nats/char"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([r["step"] for r in records], [r["train_loss"] for r in records], label="train", linewidth=1)
    val = [r for r in records if "val_loss" in r]
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
        best = min(r["val_loss"] for r in val)
        if classifier:
            accuracy = max(r.get("val_accuracy", 0.0) for r in val)
            ax.set_title(f"best validation loss {best:.4f} nats/text, best accuracy {accuracy:.3f}")
        else:
            ax.set_title(f"best validation loss {best:.4f} nats/char ({best / math.log(2):.3f} bits/char)")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss ({unit})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
