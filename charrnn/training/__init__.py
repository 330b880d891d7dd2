"""Training a language model: the loop (loop.py), a run's types (run.py), its start, fresh, resumed or
fine-tuned (start.py), the lifecycle both trainers share (lifecycle.py), presets (presets.py), fine-tuning's
vocabulary (finetune.py) and the memory preflight (memory.py)."""
