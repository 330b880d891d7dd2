"""Using a trained model: generating text (sample.py) and scoring it (evaluate.py)."""
