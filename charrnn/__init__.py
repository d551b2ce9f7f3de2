"""charrnn: character-level language models (vanilla RNN, LSTM, GRU) in NumPy."""

__version__ = "0.1.0"
