"""Side-by-side benchmarks of configaformer (scripts, not tests; the test suite only runs them tiny).

    python -m benchmarks [--archs gpt2 llama shift_lazy] [--repeats 7] [--compile] [--no-xt] [--out bench_results]

runs the same architectures built three ways -- configaformer from a config, lucidrains'
x-transformers with the equivalent options, and the hand-written GPT in `handwritten.py` -- and
reports training, forward and generation tokens/s, peak memory, FLOP/s against a large matmul, and
the ratios between them (`suite.py`). Modules: `archs` (the architectures, in each library's
terms), `impls` (one interface over the implementations), `measure` (a training step, a forward,
a matmul), `memory` (peak RSS in fresh subprocesses), `report` (JSON, markdown, PNG).
`bench_tokenize.py` is a separate script (tokenization throughput of `configaformer data prepare`).
"""
