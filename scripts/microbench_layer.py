"""Time the pieces of one CF-Conv layer against a 3x3 convolution, and the generator's
sine, at the paper's size. The figures quoted in docs/benchmarks.md's notes.

    python scripts/microbench_layer.py [--size 150] [--batch 32] [--width 32] [--repeats 7]

`--generator-only` times the generator rows alone, among them the forward evaluation
that `cfconv.Sparse(write_back=True)` adds to a step. Each piece is jitted alone and
timed after one warm-up call; medians are printed. Set
GLIBC_TUNABLES=glibc.malloc.hugetlb=1 on CPU, as `cfconv bench` does.
"""

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import cfconv


def median_time(f, *args, repeats):
    f = jax.jit(f)
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=150)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--positions", type=int, default=2**18)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--generator-only", action="store_true",
                   help="time the generator rows only (no FFT, mixing, convolution)")  # fmt: skip
    args = p.parse_args(argv)
    b, c, n = args.batch, args.width, args.size
    keys = jax.random.split(jax.random.key(0), 5)
    x = jax.random.normal(keys[0], (b, c, n, n))
    kernel = jax.lax.complex(*jax.random.normal(keys[1], (2, c, c, n, n // 2 + 1)))
    x_hat = jax.jit(jnp.fft.rfft2)(x)
    weight = jax.random.normal(keys[2], (c, c, 3, 3))
    run = lambda f, *a: median_time(f, *a, repeats=args.repeats)  # noqa: E731
    rows = (
        {}
        if args.generator_only
        else {
            "rfft2 + irfft2": run(lambda x: jnp.fft.irfft2(jnp.fft.rfft2(x), s=(n, n)), x),
            "mixing, einsum with the frequencies trailing": run(
                lambda xh, k: jnp.einsum("bihw,iohw->bohw", xh, k), x_hat, kernel
            ),
            "mixing, cfconv.fourier_mix (frequency axis leading)": run(
                jax.vmap(cfconv.fourier_mix, in_axes=(0, None)), x_hat, kernel
            ),
            "3x3 convolution": run(
                lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME"), x, weight
            ),
        }
    )
    generator = cfconv.KernelGenerator(c, c, key=keys[3])
    positions = cfconv.sample_positions(keys[4], generator.grid_shape((n, n)), args.positions)
    cotangent = jnp.exp(1j * jnp.arange(args.positions, dtype=jnp.float32))
    for name, activation in (("jnp.sin", jnp.sin), ("cfconv.fast_sin", cfconv.fast_sin)):
        g = cfconv.KernelGenerator(c, c, activation=activation, key=keys[3])
        params, static = eqx.partition(g, eqx.is_inexact_array)

        def grad(params, positions, static=static):
            def loss(p):
                values = eqx.combine(p, static)(positions, (n, n))
                return jnp.sum((values * cotangent).real)

            return jax.grad(loss)(params)

        rows[f"generator at {args.positions} positions, fwd+bwd, {name}"] = run(
            grad, params, positions
        )
    # A sparse-vmap step's generator work (rematerialized backward pass), and the one
    # forward evaluation that write-back adds (`cfconv.Sparse(write_back=True)`).
    sparse = cfconv.Sparse(num=args.positions)
    params, static = eqx.partition(generator, eqx.is_inexact_array)

    def step_grad(params, positions):
        def loss(p):
            values = sparse.evaluate(eqx.combine(p, static), positions, (n, n))
            return jnp.sum((values * cotangent).real)

        return jax.grad(loss)(params)

    rows[f"generator at {args.positions} positions, fwd+bwd as Sparse.evaluate"] = run(
        step_grad, params, positions
    )
    rows[f"generator at {args.positions} positions, forward only (write-back)"] = run(
        lambda params, positions: eqx.combine(params, static)(positions, (n, n)), params, positions
    )
    print(f"{jax.devices()[0].device_kind}; {b} images of {c}x{n}x{n}, medians of "
          f"{args.repeats}")  # fmt: skip
    for name, seconds in rows.items():
        print(f"{seconds * 1e3:9.1f} ms  {name}")


if __name__ == "__main__":
    main()
