"""Text classification with a bidirectional character encoder: the model (model.py), labelled data
(data.py), training (train.py), prediction (predict.py) and metrics (metrics.py)."""
