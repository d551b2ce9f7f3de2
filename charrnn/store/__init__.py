"""What touches the disk: every file charrnn reads or writes goes through here.

files       atomic writes: a temp file beside the target, renamed over it
checkpoint  the .npz checkpoint: save atomically, load with allow_pickle=False and validate every field
corpus      a text file as one index array: strict decoding in blocks, the vocabulary, the split
textstream  text read as it arrives, from a file or standard input, decoded strictly in blocks
cache       a big corpus's encoded indices, memory-mapped next time
export      PyTorch state_dict arrays in a plain .npz, and back

May import: numpy, the standard library, charrnn.errors and charrnn.core (a checkpoint holds a model and a
vocabulary).  Never runs or the face.
"""
