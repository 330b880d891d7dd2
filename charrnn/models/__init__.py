"""The language models behind one surface (registry.py: ``LanguageModel``, ``build_model``): the recurrent
CharRNN (rnn.py) with its steppers (rnn_steppers.py), and the Transformer CharGPT (gpt.py) with its
key/value-cache sampler (gpt_sampler.py). A model knows no terminal, file or training loop."""
