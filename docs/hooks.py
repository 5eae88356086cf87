"""MkDocs hooks: the API reference and the navigation, generated from what exists.

* ``api/*.md`` pages are generated at build time, one per subpackage, with one
  mkdocstrings block per public module (a module with a non-empty ``__all__``;
  names starting with ``_`` are private). The top-level page lists every name of
  ``retcodec.__all__`` with a link to its reference, so a renamed or undocumented
  public function fails ``mkdocs build --strict``.
* With ``RETCODEC_EXECUTED_NOTEBOOKS=<folder>`` (CI sets it to the executed copies written by
  ``tools/run_notebooks.py --out <folder>``) the tutorials are shown with their outputs; the
  committed notebooks carry none.
* The navigation lists the pages that exist: known pages in a fixed order, then
  any other page of ``docs/``, the tutorials (``tutorials/*.ipynb``, sorted) and
  the API reference. A page added later (for instance by another branch) shows up
  without editing ``mkdocs.yml``.

Modules are found by reading the source (``ast``); nothing of retcodec is imported.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "retcodec"

#: pages in this order when present (others follow alphabetically)
KNOWN_PAGES = ["index.md", "install.md", "method.md", "design.md", "formats.md", "insilico.md",
               "modes.md", "celltypes.md", "experiments.md", "classifier.md", "openretina.md",
               "benchmark.md", "robustness.md"]
#: subpackage page titles (top-level modules go to "core")
SECTIONS = {"io": "Input and output (retcodec.io)", "engine": "Contribution engine (retcodec.engine)",
            "modes": "Modes (retcodec.modes)", "analysis": "Analyses (retcodec.analysis)",
            "insilico": "In-silico retina (retcodec.insilico)", "pipeline": "Pipeline (retcodec.pipeline)",
            "report": "Figures and report (retcodec.report)",
            "classifier": "Image classifiers (retcodec.classifier)", "core": "Core modules"}


def module_all(path: Path) -> list[str] | None:
    """The literal ``__all__`` of a module file, or None when it has none (or a computed one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            try:
                return list(ast.literal_eval(node.value))
            except ValueError:
                return None
    return None


def public_modules() -> dict[str, list[str]]:
    """``{section: [dotted module names]}`` of every public module with a non-empty ``__all__``."""
    out: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" or any(p.startswith("_") for p in parts):
            continue                         # packages re-export; private modules are not API
        if not module_all(path):
            continue
        section = parts[1] if len(parts) > 2 else "core"
        out.setdefault(section, []).append(".".join(parts))
    return out


def top_level_api() -> dict[str, str]:
    """``retcodec.__all__`` names (but ``__version__``) -> defining module, from ``_API`` in ``__init__``."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_API" for t in node.targets):
            return {k: f"retcodec.{v}" for k, v in ast.literal_eval(node.value).items()}
    raise RuntimeError("retcodec/__init__.py has no _API table")


def section_page(section: str, modules: list[str]) -> str:
    lines = [f"# {SECTIONS.get(section, section)}", ""]
    for module in modules:
        lines += [f"## `{module}`", "", f"::: {module}", "    options:", "      show_root_heading: false",
                  "      show_root_toc_entry: false", ""]
    return "\n".join(lines)


def index_page(sections: dict[str, list[str]]) -> str:
    lines = ["# API reference", "",
             "Generated from the docstrings. `import retcodec as rc` gives the names below; every "
             "other public function lives in its module (pages in the menu, one per subpackage).", "",
             "| name | defined in |", "|---|---|"]
    for name, module in sorted(top_level_api().items()):
        lines.append(f"| [`rc.{name}`][{module}.{name}] | `{module}` |")
    lines += ["", "## Modules", ""]
    for section, modules in sections.items():
        lines.append(f"- [{SECTIONS.get(section, section)}]({section}.md): "
                     + ", ".join(f"`{m}`" for m in modules))
    return "\n".join(lines) + "\n"


def _sorted_sections(sections: dict[str, list[str]]) -> dict[str, list[str]]:
    order = list(SECTIONS)
    return dict(sorted(sections.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order),
                                                         kv[0])))


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    executed = os.environ.get("RETCODEC_EXECUTED_NOTEBOOKS")
    if executed:                     # show the executed copies (outputs, figures) instead
        for file in files:
            copy = Path(executed) / Path(file.src_uri).name
            if file.src_uri.startswith("tutorials/") and file.src_uri.endswith(".ipynb") and copy.is_file():
                file.abs_src_path = str(copy)
    sections = _sorted_sections(public_modules())
    files.append(File.generated(config, "api/index.md", content=index_page(sections)))
    for section, modules in sections.items():
        files.append(File.generated(config, f"api/{section}.md", content=section_page(section, modules)))
    return files


def on_config(config: Any) -> Any:
    docs = Path(config["docs_dir"])
    pages = sorted(p.relative_to(docs).as_posix() for p in docs.glob("*.md"))
    guides = [p for p in KNOWN_PAGES if p in pages] + [p for p in pages if p not in KNOWN_PAGES]
    tutorials = sorted(p.relative_to(docs).as_posix() for p in (docs / "tutorials").glob("*.ipynb"))
    sections = _sorted_sections(public_modules())
    api = [{"Overview": "api/index.md"}] + [{SECTIONS.get(s, s): f"api/{s}.md"} for s in sections]
    nav: list[Any] = [guides[0]] if guides and guides[0] == "index.md" else []
    nav += [{"Guides": [p for p in guides if p != "index.md"]}]
    if tutorials:
        nav.append({"Tutorials": tutorials})
    nav.append({"API reference": api})
    config["nav"] = nav
    return config
