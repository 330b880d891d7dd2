"""What training computes its steps with: the engine interface (base.py), worker processes over the
batch's streams (pool.py) and PyTorch on a CPU or GPU (torch_engine.py, torch_gpt.py)."""
