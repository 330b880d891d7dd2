"""Files: corpora and their vocabulary (corpus.py), checkpoints (checkpoint.py), atomic writes (atomic.py),
safetensors (safetensors.py) and export to / import from PyTorch's names (export.py)."""
