"""The NumPy core: the maths of a character-level language model.

vocab     characters <-> indices (the tokenizer)
cells/    one module per recurrent cell (LSTM, GRU, RNN): forward and backward over a chunk, like the equations
model     the stack of layers, dropout, the decoder and the softmax cross-entropy loss
optim     optimisers and gradient clipping over named arrays
stepper   one character per stream through the whole stack: sampling's fast step, with its fused LSTM step
sample    drawing characters (temperature, top-k, top-p, greedy) and generating text from a prime
beam      beam search: the likeliest continuation of a prime
logprob   log-probabilities of characters from logits: log-softmax, each target's surprisal
trace     a text's pass through a model, step by step: every layer's states, gates and predictions

May import: numpy, the standard library, charrnn.errors and charrnn.fast (the speed machinery below it).
Never storage, runs or the face: nothing here touches a disk or a terminal.
"""
