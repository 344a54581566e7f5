import getpass
import os
import tempfile


# Several test processes may share one GPU: allocate as needed, not 75% up front each.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import hypothesis  # noqa: E402
import jax  # noqa: E402


# Many tests compile the same small programs (new jitted closures, new processes): share
# the compiled programs through JAX's persistent cache, one folder per user name, kept between
# runs (entries are keyed by the program, the JAX version and the device).
if os.environ.get("CFCONV_TEST_JAX_CACHE", "1") != "0":
    try:
        _user = getpass.getuser()
    except (KeyError, OSError):  # a uid with no name (some containers)
        _user = "unknown"
    _cache = os.path.join(tempfile.gettempdir(), f"cfconv-tests-jax-cache-{_user}")
    jax.config.update("jax_compilation_cache_dir", _cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)

# Implicit rank promotion hides shape bugs; every array op in the suite must be explicit.
jax.config.update("jax_numpy_rank_promotion", "raise")

# The default keeps the README's test command within CI's time budget (most of a test's
# time is compiling each new shape); `HYPOTHESIS_PROFILE=ci` draws ten times as many.
hypothesis.settings.register_profile("default", max_examples=6, deadline=None, print_blob=True)
hypothesis.settings.register_profile("ci", max_examples=60, deadline=None, print_blob=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
