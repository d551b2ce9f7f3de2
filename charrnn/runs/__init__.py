"""What each command does, without the terminal: the policy and loop of a training run, and the work behind
evaluation, inspection and fine-tuning.

policy     a run's settings: presets over defaults, and what --resume, --init-from and --overwrite decide;
           which file a CHECKPOINT argument means
presets    named configurations (default, char-rnn, min-char-rnn)
train      the training loop, top to bottom
record     what a checkpoint records of a run: its position, history and best validation loss
schedule   the learning rate at each step, the run's length in steps, where each epoch's streams start
signals    Ctrl-C and SIGTERM, from the first instruction to the last, and during a run
footprint  the memory a run, an evaluation or a sample needs, from the shapes alone
streams    a split cut into B parallel streams of (B, T) chunks
evaluate   scoring text with carried state: validation and `charrnn eval`
score      scoring records of text, each from a fresh state: `charrnn score`
viz/       looking inside a model: the measurements and the HTML page of `charrnn viz`
finetune   a new run from a trained model's weights (--init-from)
inspect    what a checkpoint holds, as plain facts
units      how durations, sizes and non-finite numbers read in messages

May import: numpy, the standard library, charrnn.errors, charrnn.fast, charrnn.core, charrnn.store and
charrnn.engines (what runs the steps; the torch engine imported only when asked for).
Never click, rich or tqdm: news goes out through a Reporter the face supplies.
"""
