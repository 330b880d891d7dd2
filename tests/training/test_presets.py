"""The preset rules, as the Python API gets them (the CLI goes through the same functions)."""


import pytest

from charrnn import GPTConfig, TrainConfig
from charrnn.models.rnn import ModelConfig
from charrnn.training.presets import DEFAULTS, PRESETS, preset_configs, resume_config


def test_default_preset_is_the_dataclasses_defaults():
    model_config, config = preset_configs()
    assert model_config == ModelConfig(0)
    assert config == TrainConfig()
    assert DEFAULTS["hidden_size"] == ModelConfig(0).hidden_size and DEFAULTS["val_frac"] == TrainConfig().val_frac


def test_a_preset_then_the_options_given_win():
    model_config, config = preset_configs("char-rnn", hidden_size=64, max_time=30, learning_rate=None)
    assert (model_config.model, model_config.hidden_size) == ("lstm", 64)
    assert (config.optimizer, config.learning_rate, config.max_time) == ("rmsprop", 2e-3, 30)
    assert config.val_frac == TrainConfig().val_frac  # outside the presets: the dataclass default


def test_another_cell_or_optimizer_gets_its_own_tuned_rate():
    assert preset_configs(model="rnn")[1].learning_rate is None  # train picks DEFAULT_LEARNING_RATES
    assert preset_configs(optimizer="sgd")[1].learning_rate is None
    assert preset_configs(model="rnn", learning_rate=0.01)[1].learning_rate == 0.01
    assert preset_configs("min-char-rnn", model="rnn")[1].learning_rate == PRESETS["min-char-rnn"]["learning_rate"]


def test_a_dropout_given_is_not_raised_later():
    assert preset_configs()[1].late_dropout == TrainConfig().late_dropout
    assert preset_configs(dropout=0.1)[1].late_dropout is None
    assert preset_configs(dropout=0.1, late_dropout=0.3)[1].late_dropout == 0.3


def test_resume_config_keeps_the_saved_options_under_those_given():
    saved = {"batch_size": 7, "max_time": 5.0, "no_longer_an_option": 1}
    config = resume_config(saved, max_time=60, hidden_size=999)  # model options: the checkpoint's
    assert (config.batch_size, config.max_time) == (7, 60)


def test_unknown_options_and_presets_are_refused():
    with pytest.raises(ValueError, match="unknown option: hiden_size"):
        preset_configs(hiden_size=3)
    with pytest.raises(ValueError, match="preset must be one of"):
        preset_configs("char_rnn")


def test_presets_and_the_gpt_recipe():
    model, config = preset_configs(model="gpt")
    recipe = PRESETS["gpt"]
    assert isinstance(model, GPTConfig)
    assert (model.num_layers, model.num_heads, model.hidden_size, model.context_length) == (
        recipe["num_layers"], recipe["num_heads"], recipe["hidden_size"], recipe["seq_length"])
    assert config.learning_rate == recipe["learning_rate"]
    assert (config.late_dropout, config.late_dropout_epochs) == (recipe["late_dropout"], recipe["late_dropout_epochs"])
    model, config = preset_configs("nanogpt-cpu")
    assert (model.num_layers, model.num_heads, model.hidden_size, model.context_length, config.batch_size,
            model.dropout) == (4, 4, 128, 64, 12, 0.0)
    model, config = preset_configs("nanogpt", seq_length=128)
    assert (model.num_layers, model.num_heads, model.hidden_size, model.context_length, config.batch_size,
            model.dropout) == (6, 6, 384, 128, 64, 0.2)
    model, _ = preset_configs("nanogpt", model="gru")  # the other kind: the default recipe under it
    assert model.model == "gru" and model.hidden_size == PRESETS["default"]["hidden_size"]
    with pytest.raises(ValueError, match="cannot resume a gpt checkpoint"):
        resume_config({}, {"model": "gpt"}, model="gru")
