"""The peers: PyTorch (and one plain numpy) scripts of the models charrnn is measured against.

    from benchmarks import peers
    peers.rnn_train_step(cell, hidden, layers, batch, seq, ids)   # char-rnn: one-hot into nn.LSTM/GRU/RNN, Adam
    peers.lstm_sampler(hidden, layers, samples, mode)             # nn.LSTM or stacked nn.LSTMCell, one step a char
    peers.min_char_rnn_step(ids)                                  # min-char-rnn: float64 numpy Elman RNN, Adagrad
    peers.gpt(vocab, hidden, layers, heads, context)              # nanoGPT's model.py; gpt_optimizer, gpt_step,
    peers.generate_no_cache / generate_kv_cache / window_nll      # its sampling and scoring
    peers.lstm_anchor(...)                                        # Embedding + LSTM trained for a time budget
    peers.classifier(...) / classifier_step / classifier_predict  # one-hot BiLSTM over packed sequences

torch is imported inside the functions, so importing this module never needs it.
"""

import math
import time

import numpy as np

# ---- char-rnn: one-hot into nn.LSTM / nn.GRU / nn.RNN, Adam, value clipping (speed)


def rnn_train_step(cell, hidden, layers, batch, seq, ids, vocab=65):
    """A function doing one training step of B contiguous streams (state carried, detached); returns B*T."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(0)
    kinds = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
    rnn = kinds[cell](input_size=vocab, hidden_size=hidden, num_layers=layers, batch_first=True)
    head = nn.Linear(hidden, vocab)
    params = [*rnn.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=2e-3)
    length = len(ids) // batch
    streams = torch.from_numpy(ids[: batch * length].reshape(batch, length))
    state = {"pos": 0, "h": None}

    def step():
        pos = state["pos"] if state["pos"] + seq + 1 <= length else 0
        out, h = rnn(F.one_hot(streams[:, pos : pos + seq], vocab).float(), state["h"] if pos else None)
        loss = F.cross_entropy(head(out).reshape(-1, vocab), streams[:, pos + 1 : pos + seq + 1].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_value_(params, 5.0)
        opt.step()
        state["pos"], state["h"] = pos + seq, tuple(t.detach() for t in h) if isinstance(h, tuple) else h.detach()
        return batch * seq

    return step


def lstm_sampler(hidden, layers, samples, mode, length=500, vocab=65):
    """A function sampling ``samples`` texts of ``length`` characters at once (temperature 1) through nn.LSTM fed
    one step at a time (mode "lstm") or a stack of nn.LSTMCell with the same weights ("lstmcell"): one-hot input,
    Linear, softmax, torch.multinomial. Returns the characters it made."""
    import torch
    import torch.nn as nn

    torch.manual_seed(0)
    with torch.no_grad():
        lstm, head = nn.LSTM(vocab, hidden, num_layers=layers).eval(), nn.Linear(hidden, vocab).eval()
        cells = []
        for i in range(layers):
            cell = nn.LSTMCell(vocab if i == 0 else hidden, hidden).eval()
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(lstm, f"{name}_l{i}"))
            cells.append(cell)
    eye = torch.eye(vocab)

    @torch.no_grad()
    def run():
        prev, state = torch.zeros(samples, dtype=torch.long), None
        hs = [(torch.zeros(samples, hidden), torch.zeros(samples, hidden)) for _ in range(layers)]
        for _ in range(length):
            if mode == "lstm":
                out, state = lstm(eye[prev][None], state)
                x = out[0]
            else:
                x = eye[prev]
                for i, cell in enumerate(cells):
                    hs[i] = cell(x, hs[i])
                    x = hs[i][0]
            prev = torch.multinomial(torch.softmax(head(x), dim=-1), 1)[:, 0]
        return samples * length

    return run


# ---- min-char-rnn: the straightforward float64 numpy Elman RNN, batch 1, Adagrad (speed's seed rows)


def min_char_rnn_step(ids, hidden=100, seq=25, vocab=65):
    """One-hot column vectors, a Python loop over timesteps forward and backward, np.clip(+-5), Adagrad 0.1."""
    rs = np.random.RandomState(0)
    Wxh, Whh, Why = rs.randn(hidden, vocab) * 0.01, rs.randn(hidden, hidden) * 0.01, rs.randn(vocab, hidden) * 0.01
    bh, by = np.zeros((hidden, 1)), np.zeros((vocab, 1))
    params = [Wxh, Whh, Why, bh, by]
    memory = [np.zeros_like(p) for p in params]
    state = {"p": 0, "h": np.zeros((hidden, 1))}

    def step():
        p = state["p"] if state["p"] + seq + 1 < len(ids) else 0
        inputs, targets = ids[p : p + seq], ids[p + 1 : p + seq + 1]
        xs, hs, ps, loss = {}, {-1: state["h"] if p else np.zeros((hidden, 1))}, {}, 0.0
        for t in range(seq):
            xs[t] = np.zeros((vocab, 1))
            xs[t][inputs[t]] = 1
            hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)
            y = np.dot(Why, hs[t]) + by
            ps[t] = np.exp(y) / np.sum(np.exp(y))
            loss += -np.log(ps[t][targets[t], 0])
        grads = [np.zeros_like(q) for q in params]
        dWxh, dWhh, dWhy, dbh, dby = grads
        dhnext = np.zeros_like(hs[0])
        for t in reversed(range(seq)):
            dy = np.copy(ps[t])
            dy[targets[t]] -= 1
            dWhy += np.dot(dy, hs[t].T)
            dby += dy
            dhraw = (1 - hs[t] * hs[t]) * (np.dot(Why.T, dy) + dhnext)
            dbh += dhraw
            dWxh += np.dot(dhraw, xs[t].T)
            dWhh += np.dot(dhraw, hs[t - 1].T)
            dhnext = np.dot(Whh.T, dhraw)
        for param, grad, mem in zip(params, grads, memory):
            np.clip(grad, -5, 5, out=grad)
            mem += grad * grad
            param += -0.1 * grad / np.sqrt(mem + 1e-8)
        state["p"], state["h"] = p + seq, hs[seq - 1]
        return seq

    return step


# ---- nanoGPT's model.py (gpt, learning, engine): pre-LN blocks, c_attn, SDPA, tied lm_head, AdamW


def gpt(vocab, hidden, layers, heads, context, dropout=0.0):
    """nanoGPT's GPT with the tanh GELU charrnn uses: forward(idx (B, T), targets=None) -> (logits, loss)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn, self.c_proj = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
            self.resid_dropout = nn.Dropout(dropout)

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = (z.view(B, T, heads, C // heads).transpose(1, 2) for z in self.c_attn(x).split(C, dim=2))
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout if self.training else 0.0, is_causal=True)
            return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(hidden), Attention(), nn.LayerNorm(hidden)
            self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(approximate="tanh"),
                                     nn.Linear(4 * hidden, hidden), nn.Dropout(dropout))

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, hidden), nn.Embedding(context, hidden)
            self.drop, self.h = nn.Dropout(dropout), nn.ModuleList([Block() for _ in range(layers)])
            self.ln_f, self.lm_head = nn.LayerNorm(hidden), nn.Linear(hidden, vocab, bias=False)
            self.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT
            self.n_head = heads
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            for block in self.h:  # the residual projections (nanoGPT's c_proj.weight)
                for p in (block.attn.c_proj.weight, block.mlp[2].weight):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * layers))

        def forward(self, idx, targets=None):
            x = self.drop(self.wte(idx) + self.wpe(torch.arange(idx.size(1))))
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
            loss = None if targets is None else F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
            return logits, loss

    return GPT()


def gpt_optimizer(model, learning_rate, weight_decay=0.1):
    """nanoGPT's configure_optimizers: AdamW (0.9, 0.99), decay on the parameters of two or more dimensions."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                             lr=learning_rate, betas=(0.9, 0.99))


def gpt_step(model, opt, data, batch, context, gen):
    """One nanoGPT step on ``batch`` random windows of ``data``, gradient-norm clipping at 1; returns B*T."""
    import torch

    starts = torch.randint(len(data) - context - 1, (batch,), generator=gen)
    x = torch.stack([data[i : i + context] for i in starts])
    y = torch.stack([data[i + 1 : i + 1 + context] for i in starts])
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return batch * context


def generate_no_cache(model, idx, length, context):
    """nanoGPT's generate: each new character reruns the whole (cropped) context."""
    import torch

    with torch.no_grad():
        for _ in range(length):
            logits, _ = model(idx[:, -context:])
            idx = torch.cat((idx, torch.multinomial(torch.softmax(logits[:, -1, :], dim=-1), 1)), dim=1)
    return idx


def generate_kv_cache(model, idx, length, context):
    """A key/value-cache loop over the same modules, caches preallocated; a full window keeps its last
    context // 2 characters and recomputes their cache in one pass (as charrnn's sampler does)."""
    import torch
    import torch.nn.functional as F

    C, nh = model.wte.weight.size(1), model.n_head
    keys = torch.zeros(len(model.h), 1, nh, context, C // nh)
    values = torch.zeros_like(keys)

    def run(tokens, start):
        T = tokens.size(1)
        x = model.wte(tokens) + model.wpe(torch.arange(start, start + T))
        for i, block in enumerate(model.h):
            q, k, v = (z.view(1, T, nh, C // nh).transpose(1, 2) for z in block.attn.c_attn(block.ln_1(x)).split(C, 2))
            keys[i, :, :, start : start + T], values[i, :, :, start : start + T] = k, v
            y = F.scaled_dot_product_attention(q, keys[i, :, :, : start + T], values[i, :, :, : start + T],
                                               is_causal=T > 1)
            x = x + block.attn.c_proj(y.transpose(1, 2).reshape(1, T, C))
            x = x + block.mlp(block.ln_2(x))
        return model.lm_head(model.ln_f(x[:, -1, :]))

    with torch.no_grad():
        window = idx[:, -context:]
        logits, out = run(window, 0), [idx]
        for _ in range(length):
            nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1)
            out.append(nxt)
            if window.size(1) == context:
                window = torch.cat((window[:, context - max(1, context // 2) + 1 :], nxt), dim=1)
                logits = run(window, 0)
            else:
                window = torch.cat((window, nxt), dim=1)
                logits = run(nxt, window.size(1) - 1)
    return torch.cat(out, dim=1)


def window_nll(model, ids, context, batch=64):
    """Mean -log p over ids[1:] with charrnn's window placement (windows of P characters every P // 2)."""
    import torch
    import torch.nn.functional as F

    P, S = context, max(1, context // 2)
    windows, t = [], 1
    while t < len(ids):
        a = 0 if t <= P else ((t - P - 1) // S + 1) * S
        windows.append((a, t, min(len(ids), a + P + 1)))
        t = windows[-1][2]
    total = 0.0
    model.eval()
    with torch.no_grad():
        full = [w for w in windows if w[2] - w[0] == P + 1]
        for b in range(0, len(full), batch):
            group = full[b : b + batch]
            rows = ids[torch.tensor([a for a, _, _ in group])[:, None] + torch.arange(P + 1)]
            nll = -F.log_softmax(model(rows[:, :-1])[0], dim=-1).gather(2, rows[:, 1:, None])[..., 0]
            total += sum(nll[j, t - a - 1 :].sum().item() for j, (a, t, _) in enumerate(group))
        for a, t, stop in (w for w in windows if w[2] - w[0] != P + 1):
            rows = ids[a:stop][None]
            total -= F.log_softmax(model(rows[:, :-1])[0], dim=-1).gather(2, rows[:, 1:, None])[0, t - a - 1 :].sum()
    model.train()
    return float(total) / (len(ids) - 1)


def gpt_for_time(text, layers, heads, width, context, batch, lr, dropout, max_time, marks, seed=0):
    """nanoGPT's shakespeare_char training for ``max_time`` s of training (100 warm-up steps, cosine to a tenth):
    [(training seconds, validation loss, steps)] at each mark and at the end."""
    import torch

    torch.manual_seed(seed)
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    train, val = data[: int(len(data) * 0.9)], data[int(len(data) * 0.9) :]
    model = gpt(len(chars), width, layers, heads, context, dropout)
    opt, gen = gpt_optimizer(model, lr), torch.Generator().manual_seed(seed)
    curve, spent, steps, pending = [], 0.0, 0, sorted(m for m in marks if m < max_time)
    while spent < max_time:
        start = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (steps + 1) / 100) * (0.1 + 0.45 * (1 + math.cos(math.pi * spent / max_time)))
        gpt_step(model, opt, train, batch, context, gen)
        steps += 1
        spent += time.perf_counter() - start
        if pending and spent >= pending[0]:
            pending.pop(0)
            curve.append((spent, window_nll(model, val, context), steps))
    return curve + [(spent, window_nll(model, val, context), steps)]


# ---- the RNN anchors of the learning suite: Embedding + nn.LSTM + Linear, Adam 2e-3, norm clipping at 5


def lstm_anchor(text, hidden, layers, batch, seq, max_time, marks, seed=0):
    """Trained on B contiguous streams of the first 90 % (state carried, reset each epoch) for ``max_time`` s of
    training; validation loss over the whole last 10 % at each mark: [(training seconds, loss, steps)]."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(seed)
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([lookup[c] for c in text], dtype=torch.long)
    train, val, V = ids[: int(len(ids) * 0.9)], ids[int(len(ids) * 0.9) :], len(chars)
    embed, lstm, head = nn.Embedding(V, hidden), nn.LSTM(hidden, hidden, layers, batch_first=True), nn.Linear(hidden, V)
    params = [*embed.parameters(), *lstm.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=2e-3)
    length = len(train) // batch
    streams = train[: batch * length].reshape(batch, length)

    def validate():  # B streams of the tail in T-long chunks, state carried; the leftover after the last stream
        n = len(val) - 1
        per = n // batch
        x, y = val[:-1][: batch * per].reshape(batch, per), val[1:][: batch * per].reshape(batch, per)
        total, state = 0.0, None
        with torch.no_grad():
            for pos in range(0, per, seq):
                out, state = lstm(embed(x[:, pos : pos + seq]), state)
                total += F.cross_entropy(head(out).reshape(-1, V), y[:, pos : pos + seq].reshape(-1), reduction="sum")
            if n > batch * per:
                last = None if state is None else tuple(s[:, -1:].contiguous() for s in state)
                out, _ = lstm(embed(val[batch * per : -1][None]), last)
                total += F.cross_entropy(head(out)[0], val[batch * per + 1 :], reduction="sum")
        return float(total) / n

    curve, spent, steps, chunk, state, pending = [], 0.0, 0, 0, None, sorted(m for m in marks if m < max_time)
    while spent < max_time:
        if (chunk + 1) * seq + 1 > length:
            chunk, state = 0, None
        start = time.perf_counter()
        pos = chunk * seq
        out, state = lstm(embed(streams[:, pos : pos + seq]), state)
        loss = F.cross_entropy(head(out).reshape(-1, V), streams[:, pos + 1 : pos + seq + 1].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        state = tuple(s.detach() for s in state)
        spent += time.perf_counter() - start
        steps, chunk = steps + 1, chunk + 1
        if pending and spent >= pending[0]:
            pending.pop(0)
            curve.append((spent, validate(), steps))
    return curve + [(spent, validate(), steps)]


# ---- the classifier: one-hot into nn.LSTM / nn.GRU(bidirectional=True) over packed sequences, h_n joined


def classifier(vocab_size, num_classes, cell="lstm", hidden=128, dropout=0.0):
    """The model of ``charrnn classify`` with --pool last: forward(ids (T, B) longest first, lengths) -> logits."""
    import torch
    import torch.nn as nn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(nn, cell.upper())(vocab_size, hidden, bidirectional=True)
            self.dropout, self.out = nn.Dropout(dropout), nn.Linear(2 * hidden, num_classes)

        def forward(self, ids, lengths):
            packed = nn.utils.rnn.pack_padded_sequence(nn.functional.one_hot(ids, vocab_size).float(), lengths)
            _, state = self.rnn(packed)
            h_n = state[0] if isinstance(state, tuple) else state
            return self.out(self.dropout(torch.cat([h_n[-2], h_n[-1]], dim=1)))

    return Classifier()


def classifier_step(model, optimizer, batch, targets):
    """One step on a charrnn PaddedBatch: cross-entropy, value clipping at 5, the optimizer; returns its texts."""
    import torch

    optimizer.zero_grad()
    logits = model(torch.from_numpy(batch.ids), torch.from_numpy(batch.lengths))
    torch.nn.functional.cross_entropy(logits, torch.from_numpy(targets[batch.rows])).backward()
    torch.nn.utils.clip_grad_value_(model.parameters(), 5.0)
    optimizer.step()
    return len(batch.rows)


def classifier_predict(model, batches):
    """Predicted class of every text, over charrnn's PaddedBatches (texts sorted by length)."""
    import torch

    model.eval()
    predicted = {}
    with torch.no_grad():
        for batch in batches:
            out = model(torch.from_numpy(batch.ids), torch.from_numpy(batch.lengths)).argmax(1).numpy()
            predicted.update(zip(batch.rows.tolist(), out.tolist()))
    model.train()
    return np.array([predicted[i] for i in range(len(predicted))])
