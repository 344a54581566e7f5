"""The machine a benchmark ran on, and the huge-page malloc setting on CPU."""

import importlib.metadata
import os
import platform
import sys
from typing import Any

import jax


HUGETLB = "glibc.malloc.hugetlb=1"
"""The glibc tunable that makes malloc back large allocations with transparent huge pages
(glibc 2.35 and later), which speeds up XLA's CPU buffers."""

_REEXEC_MARK = "CFCONV_BENCH_REEXEC"


def hugetlb_enabled(environ: dict[str, str] | None = None) -> bool:
    """Whether `GLIBC_TUNABLES` (in `environ`, default `os.environ`) has the tunable."""
    value = (os.environ if environ is None else environ).get("GLIBC_TUNABLES", "")
    return "glibc.malloc.hugetlb=" in value


def with_hugetlb(environ: dict[str, str]) -> dict[str, str]:
    """A copy of `environ` with `glibc.malloc.hugetlb=1` added to `GLIBC_TUNABLES`."""
    env = dict(environ)
    old = env.get("GLIBC_TUNABLES")
    env["GLIBC_TUNABLES"] = HUGETLB if not old else f"{old}:{HUGETLB}"
    env[_REEXEC_MARK] = "1"
    return env


def reexec_with_hugetlb() -> None:
    """Replace this process by the same command line with the tunable set (glibc reads
    it only when a process starts). Does not return."""
    sys.stdout.flush()
    sys.stderr.flush()
    argv = list(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    os.execve(sys.executable, argv, with_hugetlb(dict(os.environ)))


def was_reexecuted() -> bool:
    return os.environ.get(_REEXEC_MARK) == "1"


def cpu_model() -> str:
    """The CPU model from `/proc/cpuinfo` (or `platform.processor()` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes a new allocation can get: the default device's `bytes_limit` on an
    accelerator, `MemAvailable` from `/proc/meminfo` on CPU; `None` if unknown."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        limit = stats.get("bytes_limit")
        return None if limit is None else int(limit) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def device_info() -> dict[str, Any]:
    """The default device and the host: `platform`, `device_kind`, `device_count`,
    `cpu`, `cores`, `memory_total_bytes`."""
    device = jax.devices()[0]
    total = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "platform": device.platform,
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "memory_total_bytes": total,
    }


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that decide the speed."""
    found = {"python": platform.python_version()}
    for name in ("cfconv", "jax", "jaxlib", "equinox", "optax", "numpy"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def describe_machine(device: dict[str, Any]) -> str:
    """One line naming the machine, e.g. `"cpu (TFRT_CPU_0 kind cpu): Intel Xeon ..., 2
    cores, 23 GiB"`."""
    memory = device.get("memory_total_bytes")
    memory_text = f", {memory / 2**30:.0f} GiB RAM" if memory else ""
    cores = device.get("cores")
    if device.get("platform") == "cpu":
        return f"CPU: {device.get('cpu')}, {cores} cores{memory_text}"
    return (
        f"{device.get('device_count')} x {device.get('device_kind')} ({device.get('platform')}); "
        f"host CPU: {device.get('cpu')}, {cores} cores{memory_text}"
    )
