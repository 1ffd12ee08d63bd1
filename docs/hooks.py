"""mkdocs hooks: reference tables generated from the objects themselves, so they cannot drift.

A page asks for one with a marker line:

- ``<!-- settings: proxy.settings:ProxySettings -->``: every field of a pydantic-settings model
  as its environment variable, type and default, described by the field's comment in the source
  (the line's trailing comment, else the comment block right above it); the ``# -- name --``
  section comments become sub-headings;
- ``<!-- model: proxy.wire.tts:TtsOptions -->``: every field of a pydantic model, its JSON type
  and description (``Field(description=...)``, else its source comment).

The benchmarks' plots and reports are served from ``bench/results/`` (``on_files``).
"""

from __future__ import annotations

import importlib
import inspect
import io
import re
import tokenize
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

_MARKER = re.compile(r"^<!-- (settings|model): ([\w.]+):(\w+) -->$", re.MULTILINE)
_FIELD = re.compile(r"^    (\w+):")
_SECTION = re.compile(r"^\s*# -- (.+?) -+$")
_SETTINGS_HEAD = "| variable | type | default | what it does |\n|---|---|---|---|"


def on_page_markdown(markdown: str, **_: Any) -> str:
    return _MARKER.sub(_table, markdown)


def _table(match: re.Match[str]) -> str:
    kind, module, name = match.groups()
    model = getattr(importlib.import_module(module), name)
    return _settings_table(model) if kind == "settings" else _model_table(model)


def _comments(model: type[BaseModel]) -> tuple[dict[str, str], dict[str, str]]:
    """Each field's comment in the class source, and the section heading it falls under."""
    source = inspect.getsource(model)
    trailing: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            trailing[token.start[0]] = token.string.lstrip("#").strip()
    comments: dict[str, str] = {}
    sections: dict[str, str] = {}
    block: list[str] = []
    section = ""
    for number, line in enumerate(source.splitlines(), start=1):
        if heading := _SECTION.match(line):
            section, block = heading.group(1), []
        elif line.strip().startswith("#"):
            block.append(trailing.get(number, ""))
        elif field := _FIELD.match(line):
            name = field.group(1)
            own = trailing.get(number)
            if own and line.strip().startswith(name):
                comments[name] = own
            elif block:
                comments[name] = " ".join(block)
            sections[name] = section
            block = []
        elif not line.strip():
            block = []
    return comments, sections


def _type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    text = re.sub(r"\b(?:[a-z_]\w*\.)+(?=[A-Za-z_]\w*)", "", text)  # module paths
    text = re.sub(r"^Optional\[(.*)\]$", r"\1 | None", text)
    text = re.sub(r"Literal\[(.*?)\]", lambda m: m.group(1).replace(", ", " \\| "), text)
    return text.replace("|", "\\|").replace("\\\\|", "\\|")


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    return f"`{value!r}`" if value not in (None, "") else "unset"


def _settings_table(model: type[BaseModel]) -> str:
    prefix = str(model.model_config.get("env_prefix", ""))
    comments, sections = _comments(model)
    lines: list[str] = []
    current = None
    for name, field in model.model_fields.items():
        section = sections.get(name, "")
        if section != current:
            current = section
            title = section or "general"
            lines += ["", f"### {title[0].upper()}{title[1:]}", "", _SETTINGS_HEAD]
        description = (field.description or comments.get(name, "")).replace("|", "\\|")
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            lines += _nested_rows(nested, (prefix + name).upper() + "__", description)
            continue
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        env = str(choices[0]) if choices else (prefix + name).upper()  # the SDK's own names
        lines.append(f"| `{env}` | {_type(field.annotation)} | {_default(field)} | {description} |")
    return "\n".join(lines).lstrip("\n") + "\n"


def _nested_rows(model: type[BaseModel], prefix: str, about: str) -> list[str]:
    """A nested settings model's fields (``PROXY_POLICY__TIMEOUT_S``), each with its comment
    (the parent's or the base class's, where the subclass has none)."""
    comments: dict[str, str] = {}
    for klass in reversed(model.__mro__):
        if isinstance(klass, type) and issubclass(klass, BaseModel) and klass is not BaseModel:
            comments |= _comments(klass)[0]
    rows = []
    for name, field in model.model_fields.items():
        description = (field.description or comments.get(name, "")).replace("|", "\\|")
        text = f"{description}; {about.split(' (')[0]}" if about else description
        env = f"{prefix}{name.upper()}"
        rows.append(f"| `{env}` | {_type(field.annotation)} | {_default(field)} | {text} |")
    return rows


def _model_table(model: type[BaseModel]) -> str:
    comments, _ = _comments(model)
    lines = ["| field | type | what it is |", "|---|---|---|"]
    for name, field in model.model_fields.items():
        description = (field.description or comments.get(name, "")).replace("|", "\\|")
        lines.append(f"| `{field.alias or name}` | {_type(field.annotation)} | {description} |")
    return "\n".join(lines) + "\n"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """The benchmarks' plots and HTML reports (``bench/results/``, next to the scripts and
    their rows) are served under ``results/`` so the pages can show them."""
    root = Path(config.config_file_path).parent
    results = root / "bench" / "results"
    for path in sorted(results.rglob("*")):
        if path.suffix in {".png", ".html"}:
            files.append(
                File(
                    str(Path("results") / path.relative_to(results)),
                    src_dir=str(root / "bench"),
                    dest_dir=config.site_dir,
                    use_directory_urls=config.use_directory_urls,
                )
            )
    return files
