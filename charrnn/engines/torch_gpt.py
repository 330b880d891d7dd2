"""The gpt model's forward pass in PyTorch, over charrnn's own parameters (models/gpt.py's names and layouts).

    logits = gpt_logits(torch, params, ids, config)            # ids (B, T) int64 -> logits (B, T, V)

The torch engine (torch_engine.py) trains and scores ``--model gpt`` with it. The math is models/gpt.py's,
term for term:

    x = wte[ids] + wpe[:T]                                           # (B, T, C)
    for each block:  x = x + attn(ln1(x));  x = x + mlp(ln2(x))      # GELU: the tanh approximation
    logits = ln_f(x) W_hy + b_y                                      # (B, T, V)

Weights are used as charrnn keeps them (``x @ W``, not a Linear's ``x @ W.T``: ``F.linear(x, W.T, b)``,
one fused product with its bias, reads ``W`` in place), so ``params`` may be views of one flat tensor
and autograd brings every gradient back into it. Under autocast every product, bias included, is in the
lower precision, as a Linear's: no float32 activations between them. Attention is
``scaled_dot_product_attention`` with a causal mask: PyTorch picks its fastest kernel for the device
(flash attention on a recent GPU). Dropout, when ``dropout`` > 0, acts where models/gpt.py's does (the
embeddings, the attention weights, each branch's output) and draws from torch's default generator:
the caller seeds it for each step.
"""

from ..nn.attention import LN_EPS


def gpt_logits(torch, params, ids, config, dropout=0.0):
    """Logits (B, T, V) for ``ids`` (B, T) under ``params`` (tensors by models/gpt.py's names)."""
    F = torch.nn.functional
    B, T = ids.shape
    C, nh = config.hidden_size, config.num_heads
    training = dropout > 0

    def layer_norm(x, name):
        return F.layer_norm(x, (C,), params[name + ".g"], params[name + ".b"], LN_EPS)

    def affine(x, name, bias):  # x @ W + b as one fused product (lower precision throughout under autocast)
        return F.linear(x, params[name].T, params[bias])

    x = F.dropout(params["wte"][ids] + params["wpe"][:T], dropout, training)  # (B, T, C)
    for k in range(config.num_layers):
        h = f"h{k}."
        qkv = affine(layer_norm(x, h + "ln1"), h + "attn.W_qkv", h + "attn.b_qkv")  # (B, T, 3C)
        q, key, value = (part.reshape(B, T, nh, C // nh).transpose(1, 2) for part in qkv.split(C, dim=2))
        heads = F.scaled_dot_product_attention(q, key, value, dropout_p=dropout, is_causal=True)  # (B, nh, T, hs)
        heads = heads.transpose(1, 2).reshape(B, T, C)
        x = x + F.dropout(affine(heads, h + "attn.W_proj", h + "attn.b_proj"), dropout, training)
        hidden = F.gelu(affine(layer_norm(x, h + "ln2"), h + "mlp.W_fc", h + "mlp.b_fc"), approximate="tanh")
        x = x + F.dropout(affine(hidden, h + "mlp.W_proj", h + "mlp.b_proj"), dropout, training)
    return affine(layer_norm(x, "ln_f"), "W_hy", "b_y")
