"""The peer: a PyTorch CPU script of the classifier charrnn trains, for benchmarks/classify.py.

One-hot characters into nn.LSTM / nn.GRU(bidirectional=True) over packed sequences, the final states
of both directions joined (h_n, as ``--pool last``), a linear layer, cross-entropy, Adam with value
clipping: the same model, optimizer and batches (texts sorted by length, cut into batches, the batches
shuffled) as ``charrnn classify train``. Importable (``TorchClassifier``, ``train_step``) and runnable:

    python benchmarks/torch_bilstm.py data/names.train.txt data/names.test.txt --seconds 60
"""

import argparse
import time

import numpy as np
import torch
from torch import nn

from charrnn.classify.data import LabelSet, build_vocab, encode_texts, length_buckets, pad_batch, read_labelled


class TorchClassifier(nn.Module):
    def __init__(self, vocab_size, num_classes, cell="lstm", hidden_size=128, num_layers=1, dropout=0.0):
        super().__init__()
        self.vocab_size = vocab_size
        self.rnn = getattr(nn, cell.upper())(vocab_size, hidden_size, num_layers=num_layers, bidirectional=True,
                                             dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden_size, num_classes)

    def forward(self, ids, lengths):
        """ids (T, B) longest first, lengths (B,) -> logits (B, C)."""
        x = nn.functional.one_hot(ids, self.vocab_size).float()  # (T, B, V)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths)
        _, state = self.rnn(packed)
        h_n = state[0] if isinstance(state, tuple) else state  # (layers·2, B, H)
        return self.out(self.dropout(torch.cat([h_n[-2], h_n[-1]], dim=1)))


def prepare(train_path):
    lines = read_labelled(train_path)
    labels = LabelSet.from_lines(lines.labels)
    vocab = build_vocab(lines.texts)
    index = labels.index()
    targets = np.array([index[names[0]] for names in lines.labels])
    return lines, labels, vocab, encode_texts(lines.texts, vocab), targets


def train_step(model, optimizer, ids, lengths, targets):
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(ids, lengths), targets)
    loss.backward()
    torch.nn.utils.clip_grad_value_(model.parameters(), 5.0)
    optimizer.step()
    return float(loss)


def batches(encoded, batch_size, seed, epoch, pad_id):
    """The epoch's batches as torch tensors: the same as charrnn's for the same seed and epoch."""
    for rows in length_buckets(encoded.lengths, batch_size, np.random.default_rng([seed, epoch])):
        batch = pad_batch(encoded, rows, pad_id)
        yield torch.from_numpy(batch.ids), torch.from_numpy(batch.lengths), batch.rows


def predict(model, encoded, pad_id, batch_size=512):
    model.eval()
    out = np.empty(len(encoded), np.int64)
    with torch.no_grad():
        for rows in length_buckets(encoded.lengths, batch_size):
            batch = pad_batch(encoded, rows, pad_id)
            out[batch.rows] = model(torch.from_numpy(batch.ids), torch.from_numpy(batch.lengths)).argmax(1).numpy()
    model.train()
    return out


def train_for(train_path, valid_path, seconds, cell="lstm", hidden_size=128, batch_size=64, lr=3e-3, dropout=0.0,
              seed=1):
    """Train for ``seconds``, validating after each epoch; return (the best model's state, labels, vocab)."""
    torch.manual_seed(seed)
    lines, labels, vocab, encoded, targets = prepare(train_path)
    valid = read_labelled(valid_path)
    valid_encoded = encode_texts(valid.texts, vocab)
    index = labels.index()
    valid_targets = np.array([index.get(names[0], -1) for names in valid.labels])
    model = TorchClassifier(len(vocab) + 1, len(labels), cell, hidden_size, dropout=dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    start, epoch, best, best_state = time.perf_counter(), 0, -1.0, None
    while time.perf_counter() - start < seconds:
        for ids, lengths, rows in batches(encoded, batch_size, seed, epoch, len(vocab)):
            train_step(model, optimizer, ids, lengths, torch.from_numpy(targets[rows]))
            if time.perf_counter() - start >= seconds:
                break
        epoch += 1
        accuracy = float((predict(model, valid_encoded, len(vocab)) == valid_targets).mean())
        if accuracy > best:
            best, best_state = accuracy, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model, labels, vocab


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("train")
    parser.add_argument("valid")
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    model, labels, vocab = train_for(args.train, args.valid, args.seconds)
    valid = read_labelled(args.valid)
    predicted = predict(model, encode_texts(valid.texts, vocab), len(vocab))
    print(f"accuracy {np.mean([labels.names[p] in names for p, names in zip(predicted, valid.labels)]):.4f}")


if __name__ == "__main__":
    main()
