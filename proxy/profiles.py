"""Knowing the setup: the policy's size class and family, the scorer's strength, and the rules
file that maps them (and the estimated difficulty) to a method for ``auto``.

The rules live in ``auto_rules.toml`` (shipped; ``PROXY_AUTO_RULES_FILE`` overrides), not in code.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, get_args

from proxy.control import Plan
from proxy.settings import ProxySettings
from strategies import AutoConfig, MethodName

__all__ = [
    "AutoRules", "Family", "Profile", "apply_profile", "default_rules", "load_rules", "profile_of",
]  # fmt: skip

SizeClass = Literal["small", "mid", "large"]
ScorerClass = Literal["strong", "weak", "none"]
DIFFICULTIES = ("easy", "medium", "hard")
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
    table: dict[str, dict[str, dict[str, MethodName]]]  # size -> scorer -> difficulty -> method
    small_below_b: float
    large_from_b: float
    families: tuple[Family, ...]
    strong: tuple[str, ...]
    weak: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Profile:
    """What ``auto`` knows about this request's setup."""

    model: str
    params_b: float | None
    size: SizeClass
    family: Family | None
    scorer: ScorerClass


def default_rules() -> Traversable:
    """The shipped rules file, read as package data (it is inside the wheel)."""
    return resources.files("proxy") / "auto_rules.toml"


def load_rules(path: Path | None = None) -> AutoRules:
    """Read and validate a rules file; a bad file fails at start-up, naming the problem."""
    source: Path | Traversable = path or default_rules()
    data = tomllib.loads(source.read_text())
    methods = set(get_args(MethodName))
    table = data["rules"]
    for size in get_args(SizeClass):
        for scorer in get_args(ScorerClass):
            cell = table.get(size, {}).get(scorer)
            if cell is None or set(cell) != set(DIFFICULTIES) or not set(cell.values()) <= methods:
                raise ValueError(f"{source}: rules.{size}.{scorer} must map easy/medium/hard "
                                 f"to one of {sorted(methods)}")  # fmt: skip
    auto, sizes = data.get("auto", {}), data.get("sizes", {})
    return AutoRules(
        pilots=int(auto.get("pilots", 4)),
        confidence=float(auto.get("confidence", 0.95)),
        chunk=int(auto.get("chunk", 4)),
        table=table,
        small_below_b=float(sizes.get("small_below_b", 7)),
        large_from_b=float(sizes.get("large_from_b", 72)),
        families=tuple(_family(name, spec) for name, spec in data.get("families", {}).items()),
        strong=tuple(data.get("scorers", {}).get("strong", ())),
        weak=tuple(data.get("scorers", {}).get("weak", ())),
    )


def _family(name: str, spec: dict[str, Any]) -> Family:
    methods = spec.get("methods")
    return Family(
        name=name,
        match=tuple(m.lower() for m in spec.get("match", (name,))),
        system_prompt=str(spec.get("system_prompt", "")),
        user_suffix=str(spec.get("user_suffix", "")),
        temperature=spec.get("temperature"),
        top_p=spec.get("top_p"),
        methods=tuple(methods) if methods else None,
    )


def profile_of(model: str, scorer_kind: str, settings: ProxySettings, rules: AutoRules) -> Profile:
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
    return Profile(model, params_b, size, family, _scorer_class(scorer_kind, settings, rules))


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


def apply_profile(
    plan: Plan, profile: Profile, rules: AutoRules, *, request_has_sampling: bool
) -> Plan:
    """The plan with the family's sampling defaults and, for ``auto``, the resolved rules."""
    config = plan.config
    family = profile.family
    if family is not None and not request_has_sampling:
        config = dataclasses.replace(
            config,
            temperature=family.temperature
            if family.temperature is not None
            else config.temperature,
            top_p=family.top_p if family.top_p is not None else config.top_p,
        )
    if plan.strategy == "auto":
        cell = rules.table[profile.size][profile.scorer]
        allowed = family.methods if family and family.methods else None
        methods = {d: _allowed(cell[d], allowed) for d in DIFFICULTIES}
        family_name = family.name if family else "unknown"
        reason = f"policy {profile.size} ({_size_text(profile)}), {profile.scorer} scorer, "
        reason += f"family {family_name}"
        auto = AutoConfig(
            methods=methods,  # type: ignore[arg-type]
            pilots=rules.pilots, confidence=rules.confidence, chunk=rules.chunk, reason=reason,
        )  # fmt: skip
        config = dataclasses.replace(config, auto=auto)
    return dataclasses.replace(plan, config=config)


def _allowed(method: MethodName, allowed: tuple[MethodName, ...] | None) -> MethodName:
    if allowed is None or method in allowed:
        return method
    return allowed[0]


def _size_text(profile: Profile) -> str:
    return f"{profile.params_b:g}B" if profile.params_b is not None else "size unknown"
