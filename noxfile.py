"""Development tasks: `nox -s tests`, `lint`, `typecheck`, `docs`, `bench`."""

import nox


nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck", "docs"]
nox.options.reuse_existing_virtualenvs = True

LINT_PATHS = ["src", "tests", "noxfile.py"]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite; extra arguments go to pytest (`nox -s tests -- -k ema`)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check formatting and lint with ruff."""
    session.install("ruff>=0.6")
    session.run("ruff", "format", "--check", *LINT_PATHS)
    session.run("ruff", "check", *LINT_PATHS)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package with pyright."""
    session.install("-e", ".[typecheck,test]")
    session.run("pyright", "src", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation offline, failing on any warning."""
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The paper's Tables 1-3 (`cfconv bench`); default `--quick`, other options after `--`
    (`nox -s bench -- --preset default --json bench.json`)."""
    session.install("-e", ".")
    session.run("cfconv", "bench", *(session.posargs or ["--quick"]))
