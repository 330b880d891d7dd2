"""The PyTorch peer of ``--model gpt``: a character GPT written as nanoGPT's model.py writes it.

Pre-LN blocks, ``c_attn`` (C -> 3C) and ``F.scaled_dot_product_attention(is_causal=True)``, an MLP of
4C with GELU, learned position embeddings, ``lm_head`` tied to ``wte`` (nanoGPT's choice), AdamW with
weight decay on the matrices only, gradient-norm clipping at 1.0, nanoGPT's initialisation. One
difference from nanoGPT, to be the same model as charrnn's: GELU is the tanh form (charrnn's;
nanoGPT's ``nn.GELU()`` is erf). Dropout (when on) acts where nanoGPT's does: embeddings, attention
weights (``dropout_p`` of scaled_dot_product_attention) and residual branches. torch is imported lazily.
"""

import math


def build(vocab, hidden, layers, heads, context, dropout=0.0):
    """A nanoGPT-style ``nn.Module``: forward(idx (B, T), targets=None) -> (logits (B, T, V), loss)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(hidden, 3 * hidden)
            self.c_proj = nn.Linear(hidden, hidden)
            self.resid_dropout = nn.Dropout(dropout)

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(C, dim=2)
            q, k, v = (z.view(B, T, heads, C // heads).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout if self.training else 0.0,
                                               is_causal=True)
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_dropout(self.c_proj(y))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(hidden, 4 * hidden)
            self.gelu = nn.GELU(approximate="tanh")
            self.c_proj = nn.Linear(4 * hidden, hidden)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x):
            return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(hidden)
            self.attn = CausalSelfAttention()
            self.ln_2 = nn.LayerNorm(hidden)
            self.mlp = MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab, hidden)
            self.wpe = nn.Embedding(context, hidden)
            self.drop = nn.Dropout(dropout)
            self.h = nn.ModuleList([Block() for _ in range(layers)])
            self.ln_f = nn.LayerNorm(hidden)
            self.lm_head = nn.Linear(hidden, vocab, bias=False)
            self.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT
            self.n_head = heads
            self.apply(self._init_weights)
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * layers))

        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

        def forward(self, idx, targets=None):
            T = idx.size(1)
            pos = torch.arange(0, T, dtype=torch.long)
            x = self.drop(self.wte(idx) + self.wpe(pos))
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))
            loss = None
            if targets is not None:
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
            return logits, loss

    return GPT()


def optimizer(model, learning_rate, weight_decay=0.1):
    """nanoGPT's configure_optimizers: AdamW, decay on parameters of 2 or more dimensions, betas (0.9, 0.99)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.99))


def train_step(model, opt, x, y, grad_clip=1.0):
    """One nanoGPT training step on (B, T) tensors; returns the loss."""
    import torch

    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def generate_no_cache(model, idx, length, context, temperature=1.0):
    """nanoGPT's generate: each new character reruns the whole (cropped) context."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        for _ in range(length):
            idx_cond = idx if idx.size(1) <= context else idx[:, -context:]
            logits, _ = model(idx_cond)
            probs = F.softmax(logits[:, -1, :] / temperature, dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
    return idx


def generate_kv_cache(model, idx, length, context, temperature=1.0):
    """A key/value-cache loop over the same modules, caches preallocated: one position per block per new
    character; when the window is full it keeps the last context // 2 characters and recomputes their
    cache in one pass (as charrnn's sampler does)."""
    import torch
    import torch.nn.functional as F

    C, nh = model.wte.weight.size(1), model.n_head
    keys = torch.zeros(len(model.h), 1, nh, context, C // nh)
    values = torch.zeros_like(keys)

    def run(tokens, start):  # tokens (1, t) at positions start.. ; fills the caches there
        T = tokens.size(1)
        x = model.wte(tokens) + model.wpe(torch.arange(start, start + T))
        for i, block in enumerate(model.h):
            q, k, v = block.attn.c_attn(block.ln_1(x)).split(C, dim=2)
            q, k, v = (z.view(1, T, nh, C // nh).transpose(1, 2) for z in (q, k, v))
            keys[i, :, :, start : start + T] = k
            values[i, :, :, start : start + T] = v
            k, v = keys[i, :, :, : start + T], values[i, :, :, : start + T]
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
            x = x + block.attn.c_proj(y.transpose(1, 2).reshape(1, T, C))
            x = x + block.mlp(block.ln_2(x))
        return model.lm_head(model.ln_f(x[:, -1, :]))

    with torch.no_grad():
        window = idx[:, -context:]
        logits = run(window, 0)
        out = [idx]
        for _ in range(length):
            probs = F.softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(probs, num_samples=1)
            out.append(nxt)
            if window.size(1) == context:
                keep = max(1, context // 2)
                window = torch.cat((window[:, context - keep + 1 :], nxt), dim=1)
                logits = run(window, 0)
            else:
                window = torch.cat((window, nxt), dim=1)
                logits = run(nxt, window.size(1) - 1)
    return torch.cat(out, dim=1)
