r"""Per-device memory and communication of the FSDP train step at 1, 2, 4 and 8 devices.

  python -m bench.fsdp_memory [--models gpt_b,titok_s] [--devices 1,2,4,8] [--batch 8] \
      [--json out.json]

For each model and device count N, the training loop's own jitted step
(`visgen.train.state.make_train_step`: loss, gradients, AdamW, EMA; donated
state) is lowered and compiled for a `(data=1, fsdp=N)` mesh with the loop's
shardings (`visgen.train.sharding`: FSDP by size, parameters of at least
`min_fsdp_size` elements split along their largest divisible axis) on abstract
shapes only (`jax.eval_shape`): nothing of the model is allocated, so GPT-B
compiles on a laptop. Reported per device:

  - `state_bytes`: parameters + AdamW moments + EMA parameters, from each
    array's shard shape under its sharding (what FSDP divides by N; the small
    replicated arrays are not divided);
  - `params_bytes`, `opt_bytes`: the same split into parameters and the
    optimizer's state;
  - XLA's `compiled.memory_analysis()`: `arguments` (state + batch shards),
    `temporaries` (activations, gathered weights, gradients in flight) and
    `peak` (arguments + outputs + temporaries - donated aliases);
  - the collectives in the compiled HLO (`compiled.as_text()`): counts of
    all-gather, reduce-scatter, all-reduce (and their async -start forms),
    all-to-all and collective-permute.

Models: `gpt_b` is `configs/ar.py:size=B` (LlamaGen GPT-B, 16 x 16 tokens of
16384 codes, 1000 classes) trained on token ids as from a token cache
(`visgen.tasks.generator.TokenBatchTask`); `titok_s` is
`configs/titok.py:size=S,tokens=128,res=256` (the real tokenizer task, images
256 px). The global batch (`--batch`, default 8) stays the same at every N.
CPU devices are simulated (`--xla_force_host_platform_device_count`, set here
when XLA_FLAGS does not set it); the compiled memory numbers are XLA's
estimates for that backend.
"""

import argparse
import json
import os
import re
import sys

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")


def count_collectives(hlo_text: str) -> dict[str, int]:
    """Collective ops in an HLO module's text, by kind (`-start` async forms counted
    with their kind; `-done` halves not counted)."""
    counts = dict.fromkeys(COLLECTIVES, 0)
    for kind in re.findall(r"= [^=]*?\b(" + "|".join(COLLECTIVES) + r")(?:-start)?\(", hlo_text):
        counts[kind] += 1
    return counts


def _model(name: str):
    """(task, config, abstract batch of a given size, description) of a model."""
    import jax
    import numpy as np

    from visgen.config import load_config_file
    from visgen.token_spec import TokenSpec

    if name == "gpt_b":
        from visgen.tasks.generator import TokenBatchTask

        config = load_config_file("configs/ar.py:size=B")
        generator = dict(config.generator.to_dict(), num_classes=1000)
        task = TokenBatchTask(generator, TokenSpec.discrete((16, 16), 16384))

        def batch(b):
            return {
                "tokens": jax.ShapeDtypeStruct((b, 256), np.int32),
                "label": jax.ShapeDtypeStruct((b,), np.int32),
            }

        return task, config, batch, "configs/ar.py:size=B (token ids)"
    if name == "titok_s":
        from visgen.tasks import make_task

        config = load_config_file("configs/titok.py:size=S,tokens=128,res=256")
        res = config.tokenizer.image_size

        def batch(b):
            return {"image": jax.ShapeDtypeStruct((b, res, res, 3), np.float32)}

        return make_task(config), config, batch, "configs/titok.py:size=S,tokens=128,res=256"
    raise ValueError(f"unknown model {name!r}; valid: gpt_b, titok_s")


def measure(name: str, devices: int, batch: int) -> dict:
    """One row: the compiled step of model `name` on a `(1, devices)` FSDP mesh."""
    import jax
    import numpy as np
    from flax import nnx
    from jax.sharding import Mesh

    from visgen.train import sharding as shd
    from visgen.train.config import TrainConfig
    from visgen.train.optim import OptimConfig, learning_rate_schedule, make_optimizer
    from visgen.train.state import init_state, make_train_step, split_model

    task, config, abstract_batch, description = _model(name)
    optim = OptimConfig(**config.optim)
    min_fsdp = TrainConfig(**config.train).min_fsdp_size
    tx = make_optimizer(optim, 1000)
    mesh = Mesh(np.asarray(jax.devices()[:devices]).reshape(1, devices), shd.BATCH_AXES)
    init_fn = lambda: init_state(task, tx, 0)
    abstract_state, abstract_frozen = jax.eval_shape(init_fn)
    state_sh = shd.state_shardings(abstract_state, mesh, min_fsdp)
    frozen_sh = shd.state_shardings(abstract_frozen, mesh, min_fsdp)
    graphdef = split_model(nnx.eval_shape(lambda: task.build(nnx.Rngs(0))))[0]
    step = jax.jit(
        make_train_step(graphdef, task, tx, learning_rate_schedule(optim, 1000), 0.999),
        in_shardings=(state_sh, frozen_sh, shd.batch_sharding(mesh)),
        out_shardings=(state_sh, shd.replicated(mesh)),
        donate_argnums=(0,),
    )
    compiled = step.lower(abstract_state, abstract_frozen, abstract_batch(batch)).compile()

    def per_device(tree, shardings) -> int:
        leaves = zip(jax.tree.leaves(tree), jax.tree.leaves(shardings), strict=True)
        return sum(
            int(np.prod(s.shard_shape(x.shape))) * np.dtype(x.dtype).itemsize for x, s in leaves
        )

    params = per_device(abstract_state.params, state_sh.params)
    opt = per_device(abstract_state.opt_state, state_sh.opt_state)
    ema = per_device(abstract_state.ema_params, state_sh.ema_params)
    mem = compiled.memory_analysis()
    row = {
        "model": name,
        "config": description,
        "devices": devices,
        "batch": batch,
        "parameters": int(sum(x.size for x in jax.tree.leaves(abstract_state.params))),
        "params_bytes": params,
        "opt_bytes": opt,
        "state_bytes": params + opt + ema,
        "collectives": count_collectives(compiled.as_text()),
    }
    if mem is not None:
        row.update(
            arguments=int(mem.argument_size_in_bytes),
            temporaries=int(mem.temp_size_in_bytes),
            peak=int(
                mem.argument_size_in_bytes
                + mem.output_size_in_bytes
                + mem.temp_size_in_bytes
                - mem.alias_size_in_bytes
            ),
        )
    return row


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="gpt_b,titok_s")
    p.add_argument("--devices", default="1,2,4,8")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    counts = [int(n) for n in args.devices.split(",")]
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        flag = f"--xla_force_host_platform_device_count={max(counts)}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    import jax

    if jax.device_count() < max(counts):
        print(f"error: {max(counts)} devices asked, {jax.device_count()} seen", file=sys.stderr)
        return 2
    if any(args.batch % n for n in counts):
        print(f"error: --batch {args.batch} must divide by every device count", file=sys.stderr)
        return 2
    rows = []
    print(
        "| model | devices | params + AdamW + EMA per device (MiB) | params | AdamW | "
        "XLA arguments | XLA temporaries | XLA peak | all-gather | reduce-scatter | "
        "all-reduce |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for n in counts:
            row = measure(name, n, args.batch)
            rows.append(row)
            c = row["collectives"]
            print(
                f"| {name} | {n} | {_mib(row['state_bytes'])} | {_mib(row['params_bytes'])} | "
                f"{_mib(row['opt_bytes'])} | {_mib(row.get('arguments'))} | "
                f"{_mib(row.get('temporaries'))} | {_mib(row.get('peak'))} | "
                f"{c['all-gather']} | {c['reduce-scatter']} | {c['all-reduce']} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": jax.default_backend(), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
