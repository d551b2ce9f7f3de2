"""One module per recurrent cell.  Each offers the same functions, so the model stacks them alike:

gate_count(coupled), gate_scale(H, dtype, coupled), input_bias(p), prepare(p, peephole, coupled),
step(a, ...): one time step once the recurrent GEMM has added into a (the sampler's steps call it too),
forward(xw, state0, p, ws, peephole, coupled) -> hs (T+1, N, H), stateT, cache,
backward(dhs (T+1, N, H), dstateT, cache, ws) -> d_rows (T, N, G*H), dstate0, grads.

gates holds what they share: the nonlinearities from one exp, their slopes, the gate-major layout.
May import: numpy, charrnn.fast (the recurrent GEMM's seam, workspaces) and each other's gates module.
"""

from charrnn.core.cells import gru, lstm, rnn

CELLS = {"lstm": lstm, "gru": gru, "rnn": rnn}
# Each cell's recurrent state: names of the (L, N, H) arrays, in the order the cell's functions take them.
STATE_NAMES = {"lstm": ("h", "c"), "gru": ("h",), "rnn": ("h",)}
