"""One training loop for every task: state, sharding, checkpoints, metrics.

`loop.train(...)` drives a `Task` (tokenizer or generator) through jitted,
donated train steps on a `jax.sharding.Mesh`, with orbax checkpoints that hold
the model, optimizer, EMA, step, RNG and data-iterator state together.
"""
