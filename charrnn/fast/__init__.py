"""The speed machinery: how the maths runs fast on this machine, never what it computes.

blas        NumPy's BLAS (through threadpoolctl): which library, its core, how many threads, one for a block
packed      OpenBLAS's own GEMM kernels on weights packed once a chunk, and the check they must pass first
machine     what the fast path may use here, and how: that check and the tuning, run in child processes once per
            machine and cached; the switch CHARRNN_FAST=0, which turns the packed kernels and the shards off
tuning      the machine-dependent choices measured there: packed kernels or np.matmul, block size and depth,
            how many streams a shard needs, the sampler's GEMV layout and threads
gemm        the one seam for a layer's recurrent GEMM: packed kernels or np.matmul, chosen in one place; the
            banner's line saying which path a run takes
workspace   scratch arrays reused from call to call, cache-sized time blocks, tiled transposes
shards      data parallelism on one machine: a batch's streams over the cores, in forked workers

Every fast path here has a plain twin (np.matmul, one process) that the tests compare it with.
May import: numpy, threadpoolctl, the standard library, charrnn.errors.  Never the maths, storage or the face
above it: the shards take any model with the interface shards.Shape names.
"""
