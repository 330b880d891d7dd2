"""charrnn: character-level language models (RNN, LSTM, GRU, GPT) in numpy."""

__version__ = "0.1.0"

from .evaluate import evaluate_file, score_lines
from .gpt import CharGPT, GPTConfig
from .io.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .io.corpus import Vocab, load_corpus
from .models import build_model
from .presets import finetune_configs, preset_configs, resume_config
from .rnn import CharRNN, ModelConfig
from .sample import generate, generate_batch, sample_rngs
from .train import TrainConfig, train

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
