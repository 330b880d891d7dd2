"""The numerics the models are built from: recurrent cells, attention layers, shared losses, packed
parameters, optimizers and learning-rate schedules. Nothing here knows a corpus, a file or a terminal."""
