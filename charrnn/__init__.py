"""charrnn: character-level language models (RNN, LSTM, GRU, GPT) in numpy."""

__version__ = "0.1.0"

import sys

from .inference import evaluate, sample
from .inference.evaluate import evaluate_file, score_lines
from .inference.sample import generate, generate_batch, sample_rngs
from .io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .io.corpus import Vocab, load_corpus
from .models.gpt import CharGPT, GPTConfig
from .models.registry import build_model
from .models.rnn import CharRNN, ModelConfig
from .training.loop import train
from .training.presets import finetune_configs, preset_configs, resume_config
from .training.run import TrainConfig

# the modules' paths before the package had folders, as the documentation once named them, still import
sys.modules[f"{__name__}.evaluate"], sys.modules[f"{__name__}.sample"] = evaluate, sample

__all__ = [
    "CharGPT",
    "CharRNN",
    "Checkpoint",
    "GPTConfig",
    "ModelConfig",
    "TrainConfig",
    "Vocab",
    "build_model",
    "evaluate_file",
    "generate",
    "generate_batch",
    "load_checkpoint",
    "load_corpus",
    "finetune_configs",
    "preset_configs",
    "resume_config",
    "sample_rngs",
    "save_checkpoint",
    "score_lines",
    "train",
]
