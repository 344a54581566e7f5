"""The documentation stays in step with the package.

These checks need no MkDocs: the API pages document every public name exactly once,
every `::: target` and every cross-reference names a real object, and the code in the
quickstart and the README runs.
"""

import importlib
import pathlib
import re

import pytest

import cfconv


ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API_PAGES = sorted((DOCS / "api").glob("*.md"))

_DIRECTIVE = re.compile(r"^:::\s+(\S+)\s*$", re.MULTILINE)
# [`cfconv.name`][] and [text][cfconv.name]: mkdocstrings cross-references.
_CROSSREF = re.compile(r"\[`(cfconv\.[\w.]+)`\]\[\]|\]\[(cfconv\.[\w.]+)\]")
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


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


def test_every_public_name_documented_once():
    counts = {name: 0 for name in cfconv.__all__}
    for page in API_PAGES:
        for target in _DIRECTIVE.findall(page.read_text()):
            module, _, name = target.rpartition(".")
            if module == "cfconv" and name in counts:
                counts[name] += 1
    missing = sorted(name for name, n in counts.items() if n == 0)
    repeated = sorted(name for name, n in counts.items() if n > 1)
    assert not missing, f"not in any `::: cfconv.NAME` line of docs/api/: {missing}"
    assert not repeated, f"in more than one `::: cfconv.NAME` line: {repeated}"


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


@pytest.mark.parametrize("path", ["docs/quickstart.md", "README.md"])
def test_python_blocks_run(path):
    blocks = _python_blocks(ROOT / path)
    assert blocks, f"no ```python blocks in {path}"
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for i, block in enumerate(blocks):
        code = compile(block, f"{path}[python block {i}]", "exec")
        exec(code, namespace)
