"""`cfconv filters`: learn known filters with sparse updates and with the dense gradient."""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._layer import CFConv2d
from .._mlp import parameter_count
from .._spectral import spectral_conv
from .._state import KernelState
from .._strategies import AbstractStrategy, Chunked, Sparse


def _target_kernel(channels: int, size: int):
    """Fourier kernels of two classic 3x3 filters (Sobel x and y) on every input channel."""
    sobel_x = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / channels
    spatial = np.zeros((channels, 2, size, size))
    for o, k in enumerate([sobel_x, sobel_x.T]):
        # Centre the 3x3 filter on the origin of the circular grid.
        spatial[:, o] = np.roll(np.pad(k, ((0, size - 3), (0, size - 3))), (-1, -1), (0, 1))
    return jnp.asarray(np.fft.rfft2(spatial), jnp.complex64)


def _images(key, batch: int, channels: int, size: int):
    """Smooth random images: white noise low-passed in the Fourier domain."""
    noise = jax.random.normal(key, (batch, channels, size, size))
    fy = jnp.fft.fftfreq(size)[:, None]
    fx = jnp.fft.rfftfreq(size)[None, :]
    low_pass = jnp.exp(-((fy**2 + fx**2) / 0.02))
    return jnp.fft.irfft2(jnp.fft.rfft2(noise) * low_pass, s=(size, size)) * 4


def _fit(strategy: AbstractStrategy, args, key) -> tuple[list[float], float]:
    k_layer, k_data = jax.random.split(key)
    channels, size = 3, args.image_size
    target = _target_kernel(channels, size)
    layer = CFConv2d(channels, 2, "hw_cin_cout", hidden=(32, 32, 16, 16), key=k_layer)
    state = KernelState(layer.generator.materialize((size, size)))
    optimizer = optax.adam(args.lr)
    opt_state = optimizer.init(eqx.filter(layer, eqx.is_inexact_array))

    def loss_fn(layer, state, x, key):
        y, new_state = layer(x, state, strategy=strategy, key=key)
        y_target = jax.vmap(spectral_conv, (0, None))(x, target)
        return jnp.mean((y - y_target) ** 2), new_state

    @eqx.filter_jit
    def step(layer, state, opt_state, key):
        k_x, k_s = jax.random.split(key)
        x = _images(k_x, args.batch_size, channels, size)
        (loss, state), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(
            layer, state, x, k_s
        )
        updates, opt_state = optimizer.update(grads, opt_state)
        return eqx.apply_updates(layer, updates), state, opt_state, loss

    losses = []
    keys = jax.random.split(k_data, args.steps)
    layer, state, opt_state, loss = step(layer, state, opt_state, keys[0])  # compile
    losses.append(float(loss))
    start = time.perf_counter()
    for k in keys[1:]:
        layer, state, opt_state, loss = step(layer, state, opt_state, k)
        losses.append(float(loss))
    seconds = (time.perf_counter() - start) / max(1, args.steps - 1)
    return losses, seconds


def fit_filters(args) -> int:
    """Fit Sobel filters with sparse updates and with the exact dense gradient."""
    size = args.image_size
    grid = 3 * 2 * size * (size // 2 + 1)
    num = min(args.positions, grid)
    print(
        f"cfconv filters: learn two Sobel filters (3 -> 2 channels) on {size}x{size} "
        f"smooth random images, {args.steps} Adam steps of batch {args.batch_size}.\n"
        f"The kernel grid has {grid} positions; sparse updates evaluate {num} per step."
    )
    layer = CFConv2d(3, 2, "hw_cin_cout", hidden=(32, 32, 16, 16), key=jax.random.key(0))
    print(f"Generator parameters: {parameter_count(layer.generator)}\n")
    key = jax.random.key(args.seed)
    runs = {
        f"sparse ({num} positions, rate {args.rate})": Sparse(num=num, rate=args.rate),
        "dense (exact gradient, chunked)": Chunked(chunk_size=4096),
    }
    results = {name: _fit(strategy, args, key) for name, strategy in runs.items()}
    checkpoints = sorted({0, args.steps // 4, args.steps // 2, args.steps - 1})
    width = max(len(n) for n in results)
    header = " | ".join(f"step {s:>4}" for s in checkpoints)
    print(f"{'strategy':<{width}} | {header} | s/step")
    print("-" * (width + 3 + len(header) + 9))
    for name, (losses, seconds) in results.items():
        row = " | ".join(f"{losses[s]:9.2e}" for s in checkpoints)
        print(f"{name:<{width}} | {row} | {seconds:.4f}")
    print("\n(mean squared error against the target filters' outputs)")
    return 0


def add_arguments(p, positive_int) -> None:
    """The options of `cfconv filters`."""
    p.add_argument("--steps", type=positive_int, default=300, help="training steps (default 300)")
    p.add_argument(
        "--batch-size", type=positive_int, default=16, help="images per step (default 16)"
    )
    p.add_argument(
        "--image-size", type=positive_int, default=32, help="image height=width (default 32)"
    )
    p.add_argument(
        "--positions",
        type=positive_int,
        default=2**10,
        help="positions per sparse step (default 1024)",
    )
    p.add_argument("--rate", type=float, default=0.5, help="sparse EMA rate (default 0.5)")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
