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


def plot_saturation(gates, output):
    """Draw each layer's gate saturation as Karpathy, Johnson and Fei-Fei's figure 3: a point per unit and gate,
    the fraction of time it is left-saturated (x) against right-saturated (y); ``gates`` are
    inference/neurons.py's GateSaturation. Writes the figure to ``output``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({g.layer for g in gates})
    fig, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 4), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        for g in (g for g in gates if g.layer == layer):
            ax.scatter(g.left, g.right, s=10, alpha=0.6, label=f"gate {g.gate}")
        ax.plot([0, 1], [1, 0], color="0.8", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=f"layer {layer}", xlabel="fraction left-saturated (< 0.1)",
               ylabel="fraction right-saturated (> 0.9)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
