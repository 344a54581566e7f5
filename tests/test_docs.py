"""The documentation stays in step with the package.

These checks need no MkDocs: the API pages document every public name of `cfconv` and
of its subpackages exactly once, every `::: target` and every cross-reference names a
real object, the command-line page covers every option, and the code of the guides and
the README runs.

Every ```python block of the README and of the guide pages (`docs/*.md` and
`docs/guides/*.md`, not the API pages) is executed, the blocks of one page in order in one
namespace. A block that must not run (a long training, say) starts with the line
`# not run: <why>`, which readers see too; shell commands go in ```bash blocks.
"""

import importlib
import inspect
import pathlib
import re

import pytest

from cfconv.cli import main


ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API_PAGES = sorted((DOCS / "api").glob("*.md"))
# Each module's `__all__` is documented in `::: MODULE.NAME` lines of docs/api/.
PUBLIC_MODULES = [
    "cfconv",
    "cfconv.bench",
    "cfconv.data",
    "cfconv.distributed",
    "cfconv.experiments",
    "cfconv.models",
    "cfconv.train",
]
CLI_COMMANDS = [
    "demo",
    "train",
    "compare",
    "filters",
    "spectral-bias",
    "gradient-noise",
    "sparse-ablation",
    "plot",
    "bench",
]

_DIRECTIVE = re.compile(r"^:::\s+(\S+)\s*$", re.MULTILINE)
# [`cfconv.name`][] and [text][cfconv.name]: mkdocstrings cross-references.
_CROSSREF = re.compile(r"\[`(cfconv\.[\w.]+)`\]\[\]|\]\[(cfconv\.[\w.]+)\]")
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
_NOT_RUN = "# not run:"
# The pages whose examples run: the README and every guide (the API pages hold fragments).
GUIDE_PAGES = sorted(
    p.relative_to(ROOT).as_posix() for p in [*DOCS.glob("*.md"), *(DOCS / "guides").glob("*.md")]
)
PAGES_WITH_CODE = [p for p in ["README.md", *GUIDE_PAGES] if "```python" in (ROOT / p).read_text()]


def _directives() -> list[tuple[str, str]]:
    """`(page name, target)` for every `::: target` line of the docs."""
    return [
        (page.relative_to(DOCS).as_posix(), target)
        for page in sorted(DOCS.rglob("*.md"))
        for target in _DIRECTIVE.findall(page.read_text())
    ]


def _resolve(path: str) -> object:
    """Import the longest module prefix of a dotted path, then get the attributes."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            if hasattr(obj, name):
                obj = getattr(obj, name)
            elif name in getattr(obj, "__dataclass_fields__", {}):
                obj = obj.__dataclass_fields__[name]  # a field without a default
            else:
                raise AttributeError(f"{path!r}: {obj!r} has no attribute {name!r}")
        return obj
    raise ImportError(f"{path!r}: no importable module prefix")


def _python_blocks(path: pathlib.Path) -> list[str]:
    return _PYTHON_BLOCK.findall(path.read_text())


def test_api_pages_exist():
    assert API_PAGES, "no docs/api/*.md pages found"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_documented_once(module_name):
    module = importlib.import_module(module_name)
    counts = {name: 0 for name in module.__all__}
    assert counts, f"{module_name}.__all__ is empty"
    for page in API_PAGES:
        for target in _DIRECTIVE.findall(page.read_text()):
            parent, _, name = target.rpartition(".")
            if parent == module_name and name in counts:
                counts[name] += 1
    missing = sorted(name for name, n in counts.items() if n == 0)
    repeated = sorted(name for name, n in counts.items() if n > 1)
    assert not missing, f"not in any `::: {module_name}.NAME` line of docs/api/: {missing}"
    assert not repeated, f"in more than one `::: {module_name}.NAME` line: {repeated}"


def test_directives_document_public_names():
    # A name that resolves but is not exported, such as `cfconv.__version__`, is no API.
    for page, target in _directives():
        parent, _, name = target.rpartition(".")
        if parent not in PUBLIC_MODULES:
            continue
        try:
            if inspect.ismodule(_resolve(target)):
                continue
        except (ImportError, AttributeError):
            continue  # reported by test_directives_resolve
        public = importlib.import_module(parent).__all__
        assert name in public, f"docs/{page}: `::: {target}`: {name!r} is not in {parent}.__all__"


def test_directives_resolve():
    directives = _directives()
    assert directives
    for page, target in directives:
        try:
            _resolve(target)
        except (ImportError, AttributeError) as e:
            pytest.fail(f"docs/{page}: `::: {target}` does not resolve: {e}")


def test_crossrefs_resolve():
    sources = [*DOCS.rglob("*.md"), *(ROOT / "src" / "cfconv").rglob("*.py")]
    seen = 0
    for source in sources:
        for match in _CROSSREF.finditer(source.read_text()):
            target = match.group(1) or match.group(2)
            seen += 1
            try:
                _resolve(target)
            except (ImportError, AttributeError) as e:
                where = source.relative_to(ROOT).as_posix()
                pytest.fail(f"{where}: cross-reference to {target!r} does not resolve: {e}")
    assert seen > 0


def test_guide_pages_found():
    for page in ["docs/quickstart.md", "docs/guides/faq.md", "docs/guides/parameterizations.md"]:
        assert page in PAGES_WITH_CODE


@pytest.mark.parametrize("path", PAGES_WITH_CODE)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    blocks = _python_blocks(ROOT / path)
    monkeypatch.chdir(tmp_path)  # a block that writes files writes them here
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for i, block in enumerate(blocks):
        if block.startswith(_NOT_RUN):
            continue
        code = compile(block, f"{path}[python block {i}]", "exec")
        exec(code, namespace)


@pytest.mark.parametrize("path", ["README.md", "docs/quickstart.md"])
def test_has_python_blocks(path):
    assert _python_blocks(ROOT / path), f"no ```python blocks in {path}"


def _options(command: str, capsys: pytest.CaptureFixture[str]) -> set[str]:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", usage)) - {"--help"}


@pytest.mark.parametrize("command", CLI_COMMANDS)
def test_cli_options_documented(command, capsys):
    options = _options(command, capsys)
    assert options, f"`cfconv {command} --help` lists no options"
    page = (DOCS / "cli.md").read_text()
    # The page's section for the command runs from its heading to the next one.
    section = re.search(rf"^## `cfconv {command}`$(.*?)(?=^## |\Z)", page, re.M | re.S)
    assert section, f"docs/cli.md has no section headed: ## `cfconv {command}`"
    missing = sorted(o for o in options if f"`{o}" not in section.group(1))
    assert not missing, f"docs/cli.md: options of `cfconv {command}` not documented: {missing}"
