"""What touches the disk: every file charrnn reads or writes goes through here.

files       regular files only: reads that cannot block on a FIFO, atomic writes, the guard every output passes
schema      every field of a checkpoint's metadata, with its type, range and length
checkpoint  the .npz checkpoint: save atomically; load trusting nothing, reading no more than the model needs
corpus      a text file as one index array: strict decoding in blocks, the vocabulary, the split
textstream  text read as it arrives, from a file or standard input, decoded strictly in blocks
cache       a big corpus's encoded indices, verified, memory-mapped next time
export      PyTorch state_dict arrays in a plain .npz, and back
lock        one training run per output directory
memory      how much memory the machine has, and the refusal when a model needs more

May import: numpy, the standard library, charrnn.errors and charrnn.core (a checkpoint holds a model and a
vocabulary).  Never runs or the face.
"""
