"""Knowing the setup: the policy's size class and family, the scorer's strength, and the rules
file that maps them (and the estimated difficulty) to a method for ``auto``.

The rules live in ``auto_rules.toml`` (shipped; ``PROXY_AUTO_RULES_FILE`` overrides), not in code.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TypeVar, cast, get_args

from pydantic import ValidationError

from proxy.search.rules_file import (
    AutoSection,
    FamilySpec,
    FittedScorer,
    RulesFile,
    ScorersSection,
    SizesSection,
    first_error,
)
from proxy.settings import ProxySettings, ScorerKind
from proxy.wire.json_types import JSONObject
from proxy.wire.tts import ScorerClass, SizeClass
from strategies import AutoCell, AutoConfig, CellMethod, MethodName, SamplingMode

__all__ = [
    "AutoRules",
    "Family",
    "Profile",
    "RulesError",
    "auto_config",
    "default_rules",
    "load_rules",
    "profile_of",
]

DIFFICULTIES = ("easy", "medium", "hard")
M = TypeVar("M", MethodName, CellMethod)


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file and the cell or field."""


_PARAMS = re.compile(r"(\d+(?:\.\d+)?)\s*([bm])(?![a-z])")


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    match: tuple[str, ...]
    system_prompt: str
    user_suffix: str
    temperature: float | None
    top_p: float | None
    methods: tuple[MethodName, ...] | None


@dataclass(frozen=True, slots=True)
class AutoRules:
    pilots: int
    confidence: float
    chunk: int
    mode: SamplingMode
    window: int | None
    table: dict[str, dict[str, dict[str, MethodName]]]  # size -> scorer -> difficulty -> method
    small_below_b: float
    large_from_b: float
    families: tuple[Family, ...]
    strong: tuple[str, ...]
    weak: tuple[str, ...]
    # Fitted cells (``tts-eval calibrate``): the request's scorer -> difficulty -> cell. They win
    # over ``table`` for the model they were fitted for.
    fitted: dict[str, dict[str, AutoCell]] = dataclasses.field(default_factory=dict)
    fitted_pilots: dict[str, int] = dataclasses.field(default_factory=dict)  # per scorer
    provenance: JSONObject = dataclasses.field(default_factory=dict)
    name: str = "auto_rules.toml"  # the file's name, reported in tts.auto

    @property
    def model(self) -> str | None:
        """The served model the fitted cells were measured on (None: any)."""
        value = self.provenance.get("model")
        return str(value) if value else None


@dataclass(frozen=True, slots=True)
class Profile:
    """What ``auto`` knows about this request's setup."""

    model: str
    params_b: float | None
    size: SizeClass
    family: Family | None
    scorer: ScorerClass
    scorer_kind: ScorerKind = "confidence"  # the request's scorer


def default_rules() -> Traversable:
    """The shipped rules file, read as package data (it is inside the wheel)."""
    return resources.files("proxy") / "auto_rules.toml"


def load_rules(path: Path | None = None) -> AutoRules:
    """Read and validate a rules file; a bad file fails at start-up, naming the cell or field.

    A user's file is laid over the shipped one: the sections it has replace the shipped ones
    (each ``rules.<size>.<scorer>`` it holds must map all three bins), so a file fitted by
    ``tts-eval calibrate`` may hold only its ``[fitted.<scorer>.<bin>]`` cells and provenance."""
    shipped = _parse(default_rules(), "auto_rules.toml")
    if path is None:
        return _rules(shipped, RulesFile(), "auto_rules.toml")
    return _rules(shipped, _parse(path, str(path)), path.name)


def _parse(source: Path | Traversable, name: str) -> RulesFile:
    try:
        data = tomllib.loads(source.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{name}: cannot read the rules file ({type(exc).__name__})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{name}: not valid TOML ({exc})") from exc
    try:
        return RulesFile.model_validate(data)
    except ValidationError as exc:
        raise RulesError(f"{name}: {first_error(exc)}") from None


def _rules(shipped: RulesFile, user: RulesFile, name: str) -> AutoRules:
    table = {size: dict(by_scorer) for size, by_scorer in (shipped.rules or {}).items()}
    for size, by_scorer in (user.rules or {}).items():
        table.setdefault(size, {}).update(by_scorer)
    methods = set(get_args(MethodName))
    for size in get_args(SizeClass):
        for scorer_class in get_args(ScorerClass):
            cell = table.get(size, {}).get(scorer_class)
            if cell is None or set(cell) != set(DIFFICULTIES):
                raise RulesError(
                    f"{name}: rules.{size}.{scorer_class} must map easy/medium/hard "
                    f"to one of {sorted(methods)}"
                )
    auto = user.auto or shipped.auto or AutoSection()
    sizes = user.sizes or shipped.sizes or SizesSection()
    scorers = user.scorers or shipped.scorers or ScorersSection()
    families = user.families if user.families is not None else shipped.families or {}
    provenance = user.provenance or {}
    by_name = {str(scorer): spec for scorer, spec in (user.fitted or {}).items()}
    fitted, fitted_pilots = _fitted(by_name, auto.pilots, provenance, name)
    return AutoRules(
        pilots=auto.pilots,
        confidence=auto.confidence,
        chunk=auto.chunk,
        mode=auto.mode,
        window=auto.window,
        table=cast("dict[str, dict[str, dict[str, MethodName]]]", table),
        small_below_b=sizes.small_below_b,
        large_from_b=sizes.large_from_b,
        families=tuple(_family(n, spec) for n, spec in families.items()),
        strong=tuple(scorers.strong),
        weak=tuple(scorers.weak),
        fitted=fitted,
        fitted_pilots=fitted_pilots,
        provenance=provenance,
        name=name,
    )


def _fitted(
    data: Mapping[str, FittedScorer], pilots: int, provenance: JSONObject, name: str
) -> tuple[dict[str, dict[str, AutoCell]], dict[str, int]]:
    """Each scorer's cells, and its pilots (``[fitted.<scorer>] pilots``, else ``[auto]``'s)."""
    fitted: dict[str, dict[str, AutoCell]] = {}
    pilots_of: dict[str, int] = {}
    for scorer, spec in data.items():
        scorer_pilots = spec.pilots if spec.pilots is not None else pilots
        pilots_of[scorer] = scorer_pilots
        fitted[scorer] = {}
        for difficulty, cell in spec.cells().items():
            where = f"fitted.{scorer}.{difficulty}"
            if cell.budget is not None and cell.budget < scorer_pilots:
                raise RulesError(
                    f"{name}: {where}.budget must be >= the pilots ({scorer_pilots}): it is "
                    f"the total, pilots included; got {cell.budget}"
                )
            fitted[scorer][difficulty] = AutoCell(
                method=cell.method,
                budget=cell.budget,
                confidence=cell.confidence,
                chunk=cell.chunk,
                mode=cell.mode,
                name=where,
                evidence=_evidence_text(cell.evidence, provenance),
            )
    return fitted, pilots_of


def _evidence_text(evidence: JSONObject, provenance: JSONObject) -> str:
    """One line for ``tts.auto.evidence``: what the cell was chosen on."""
    if not evidence:
        return ""
    parts = []
    if "problems" in evidence:
        parts.append(f"{float(evidence['problems']):.1f} problems")
    if "accuracy" in evidence:
        low, high = evidence.get("ci_low"), evidence.get("ci_high")
        interval = (
            f" [{float(low):.1%}, {float(high):.1%}]"
            if low is not None and high is not None
            else ""
        )
        parts.append(f"accuracy {float(evidence['accuracy']):.1%}{interval}")
    if "tokens" in evidence:
        parts.append(f"{float(evidence['tokens']):,.0f} generated tokens")
    source = " ".join(str(provenance[k]) for k in ("dataset", "fold") if provenance.get(k))
    objective = provenance.get("objective")
    text = ", ".join(parts)
    if source:
        text += f" on {source}"
    if objective:
        text += f"; objective {objective}"
    return text


def _family(name: str, spec: FamilySpec) -> Family:
    return Family(
        name=name,
        match=tuple(m.lower() for m in (spec.match or [name])),
        system_prompt=spec.system_prompt,
        user_suffix=spec.user_suffix,
        temperature=spec.temperature,
        top_p=spec.top_p,
        methods=tuple(spec.methods) if spec.methods else None,
    )


def profile_of(
    model: str, scorer_kind: ScorerKind, settings: ProxySettings, rules: AutoRules
) -> Profile:
    """Size and family from settings, else from the served model's name; scorer strength."""
    name = model.lower()
    params_b = settings.policy_params_b if settings.policy_params_b else _params_from_name(name)
    if params_b is None or params_b < rules.small_below_b:
        size: SizeClass = "small"  # unknown sizes count as small: the proxy's target setting
    elif params_b < rules.large_from_b:
        size = "mid"
    else:
        size = "large"
    wanted = settings.policy_family
    family = next(
        (
            f
            for f in rules.families
            if (f.name == wanted if wanted else any(m in name for m in f.match))
        ),
        None,
    )
    scorer = _scorer_class(scorer_kind, settings, rules)
    return Profile(model, params_b, size, family, scorer, scorer_kind)


def _params_from_name(name: str) -> float | None:
    match = _PARAMS.search(name)
    if match is None:
        return None
    value = float(match[1])
    return value / 1000 if match[2] == "m" else value


def _scorer_class(kind: str, settings: ProxySettings, rules: AutoRules) -> ScorerClass:
    if kind == "verifier":
        if settings.verifier_strength is not None:
            return settings.verifier_strength
        return "strong" if settings.verifier_format == "genprm" else "weak"
    if kind != "prm":
        return "none"
    if settings.prm_strength is not None:
        return settings.prm_strength
    name = (settings.prm_model or "").lower()
    if any(w in name for w in rules.weak):
        return "weak"
    return "strong"  # a configured PRM is assumed capable unless named as a weak one


def auto_config(profile: Profile, rules: AutoRules) -> AutoConfig:
    """The rules resolved for this setup: the table's cell of (size, scorer class), with the
    fitted cells for the request's scorer laid over it, each named for ``tts.auto``."""
    family = profile.family
    table = rules.table[profile.size][profile.scorer]
    allowed = family.methods if family and family.methods else None
    methods = {d: _allowed(table[d], allowed) for d in DIFFICULTIES}
    cells = {
        d: AutoCell(methods[d], name=f"rules.{profile.size}.{profile.scorer}.{d}")
        for d in DIFFICULTIES
    }
    fitted = rules.fitted.get(profile.scorer_kind, {})
    for difficulty, cell in fitted.items():
        cells[difficulty] = dataclasses.replace(cell, method=_allowed(cell.method, allowed))
    reason = f"policy {profile.size} ({_size_text(profile)}), {profile.scorer} scorer, "
    reason += f"family {family.name if family else 'unknown'}"
    if fitted:
        reason += f", cells fitted for {profile.scorer_kind} ({rules.name})"
    return AutoConfig(
        methods=methods,  # type: ignore[arg-type]
        pilots=rules.fitted_pilots.get(profile.scorer_kind, rules.pilots),
        confidence=rules.confidence,
        chunk=rules.chunk,
        mode=rules.mode,
        window=rules.window,
        reason=reason,
        cells=cells,  # type: ignore[arg-type]
        rules=rules.name,
    )


def _allowed(method: M, allowed: tuple[MethodName, ...] | None) -> M:
    """The family's first allowed method where the cell's is not allowed ("pilots" always is)."""
    if allowed is None or method in allowed or method == "pilots":
        return method
    return allowed[0]


def _size_text(profile: Profile) -> str:
    return f"{profile.params_b:g}B" if profile.params_b is not None else "size unknown"
