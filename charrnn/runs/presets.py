"""Named configurations.  Explicit command-line options override a preset's values, and a preset's length
(steps, epochs, time_limit) applies only when none of --steps, --epochs, --time-limit is given.

`default` is tuned for the best validation loss a 2-core machine reaches in about 10 minutes on
tiny-shakespeare (see README, bench/quality.py).  `char-rnn` and `min-char-rnn` reproduce the classics.
"""

PRESETS: dict[str, dict] = {
    # Measured with bench/quality.py on tiny-shakespeare (README).  In 10 minutes on 2 cores of a Zen 3 (5,300-
    # 5,800 steps), B 32 with T 32 reached 1.459 nats/char where B 16 with T 64 (the same 1,024 characters a step)
    # reached 1.470 and B 64 with T 16 1.470: more streams, with gradients truncated at 32 characters.  Adam 5e-3
    # beat 7e-3 at B 32 (1.466), and 3e-3 (1.500) and 7e-3 (1.474) at B 16; dropout 0.2 beat 0.3 (1.485) and tied
    # 0.1; 2x192 (Adam 3e-3) trains 1.65x the steps but ends worse (1.494), 3 layers train 0.65x the steps (1.500).
    # On a Zen 5 (10,700 steps, Adam 3e-3, T 64) LSTM 2x256 with dropout beat no dropout (which overfits) and 1x512
    # (slower per step), and the best batch was 16: 1.446-1.451, against 1.459-1.462 with B 32 and 1.467 with B 64
    # or B 8.  On an Intel Xeon with AVX-512 (7,700 steps in 10 minutes) this preset reached 1.450.
    # The cosine runs over the length of the run, 10 minutes unless --steps, --epochs or --time-limit say otherwise.
    "default": dict(
        cell="lstm", layers=2, hidden=256, dropout=0.2,
        seq_len=32, batch_size=32, optimizer="adam", lr=5e-3, lr_schedule="cosine", warmup=200, lr_min=0.1,
        clip=5.0, clip_mode="norm", time_limit=600.0,
    ),
    # Karpathy's char-rnn train.lua defaults: LSTM 2x128, seq_length 50, batch 50, RMSprop 2e-3 (decay 0.95),
    # gradients clamped element-wise at 5, lr *= 0.97 every epoch after epoch 10, 50 epochs, 5% validation.
    "char-rnn": dict(
        cell="lstm", layers=2, hidden=128, dropout=0.0,
        seq_len=50, batch_size=50, optimizer="rmsprop", lr=2e-3, lr_schedule="step", lr_decay=0.97,
        lr_decay_after=10, clip=5.0, clip_mode="value", epochs=50, val_frac=0.05, eval_every=1000,
        save_every=1000, rotate=False,
    ),
    # Karpathy's min-char-rnn gist: vanilla RNN, hidden 100, seq_length 25, one stream, Adagrad 0.1,
    # gradients clipped element-wise to [-5, 5].
    "min-char-rnn": dict(
        cell="rnn", layers=1, hidden=100, dropout=0.0,
        seq_len=25, batch_size=1, optimizer="adagrad", lr=0.1, lr_schedule="constant", clip=5.0,
        clip_mode="value", val_frac=0.0, eval_every=1000, save_every=1000, sample_every=1000, rotate=False,
    ),
}
