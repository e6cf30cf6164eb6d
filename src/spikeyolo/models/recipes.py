"""Named training recipes: complete, versioned sets of training settings shipped as YAML in ``recipes/``.

A recipe file holds ``description`` (one line), ``version`` (an integer, raised whenever a value changes),
``source`` (where the values come from) and ``settings``: a mapping whose keys are training-setting names
(the fields of ``spikeyolo.engine.trainer.TrainConfig``; ``hyp`` is itself a mapping of augmentation gains).
``spikeyolo train --recipe NAME`` starts from a recipe's settings and lets every flag typed on the command line
override them. A run records the recipe as ``NAME@VERSION`` beside the full resolved settings.

This module sits below the engine, so callers pass the allowed setting names (``fields``) in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from ..utils.errors import FileFormatError, InputError

RECIPE_KEYS = ("description", "version", "source", "settings")
NOT_IN_A_RECIPE = ("recipe", "resume")  # a recipe names a run's settings; it cannot resume one or name another


@dataclass(frozen=True)
class Recipe:
    name: str
    version: int
    description: str
    source: str
    settings: dict
    path: str

    @property
    def tag(self) -> str:
        """``NAME@VERSION``, what a run records."""
        return f"{self.name}@{self.version}"


def _shipped():
    return resources.files("spikeyolo") / "models" / "recipes"


def recipe_names() -> list[str]:
    """The shipped recipes' names (their file names without ``.yaml``), sorted."""
    return sorted(p.name[:-5] for p in _shipped().iterdir() if p.name.endswith(".yaml"))


def _parse(text: str, name: str, where: str, fields: Iterable[str] | None) -> Recipe:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise FileFormatError(f"recipe {where}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise FileFormatError(f"recipe {where}: expected a mapping with keys {list(RECIPE_KEYS)}")
    unknown = sorted(set(data) - set(RECIPE_KEYS))
    if unknown:
        raise FileFormatError(f"recipe {where}: unknown key {unknown[0]!r} (a recipe has {list(RECIPE_KEYS)})")
    settings, version = data.get("settings"), data.get("version")
    if not isinstance(settings, dict) or not settings:
        raise FileFormatError(f"recipe {where}: 'settings' must be a non-empty mapping of training settings")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FileFormatError(f"recipe {where}: 'version' must be a positive integer, got {version!r}")
    allowed = set(fields) - set(NOT_IN_A_RECIPE) if fields is not None else None
    for key in settings:
        if key in NOT_IN_A_RECIPE or (allowed is not None and key not in allowed):
            raise FileFormatError(f"recipe {where}: unknown setting {key!r} (settings are the training options, "
                                  f"e.g. epochs, lr0, batch; {', '.join(NOT_IN_A_RECIPE)} cannot be set)")
    if "hyp" in settings and not isinstance(settings["hyp"], dict):
        raise FileFormatError(f"recipe {where}: 'hyp' must be a mapping of augmentation settings")
    return Recipe(name, version, str(data.get("description") or "").strip(), str(data.get("source") or "").strip(),
                  settings, where)


def load_recipe(name: str, fields: Iterable[str] | None = None) -> Recipe:
    """A recipe by name (``NAME`` or ``NAME@VERSION``; shipped) or by the path of a recipe YAML.

    ``fields``: the allowed setting names (``TrainConfig``'s); any other key is an error naming the file and key.
    Raises :class:`InputError` for an unknown name or version, :class:`FileFormatError` for a bad file."""
    base, _, want = str(name).partition("@")
    path = Path(base).expanduser()
    if base.endswith((".yaml", ".yml")) and path.is_file():
        recipe = _parse(path.read_text(), path.stem, str(path), fields)
    else:
        if base not in recipe_names():
            raise InputError(f"--recipe {name}: no such recipe; shipped: {', '.join(recipe_names())} "
                             "(or give the path of a recipe .yaml)")
        shipped = _shipped() / f"{base}.yaml"
        recipe = _parse(shipped.read_text(), base, f"{base} ({shipped})", fields)
    if want and want != str(recipe.version):
        raise InputError(f"--recipe {name}: this spikeyolo ships {recipe.tag}; version {want} is not available "
                         "(its settings are in the args.yaml of the run that used it)")
    return recipe


def apply_recipe(recipe: Recipe, given: dict, defaults: dict) -> dict:
    """The resolved settings: ``defaults`` (every setting), then the recipe, then ``given`` (what the user typed)
    on top. ``hyp`` is merged key by key; ``recipe`` records ``NAME@VERSION``."""
    out = {**defaults, **{k: v for k, v in recipe.settings.items() if k != "hyp"}}
    out["hyp"] = {**dict(defaults.get("hyp") or {}), **dict(recipe.settings.get("hyp") or {})}
    for key, value in given.items():
        out[key] = {**out["hyp"], **value} if key == "hyp" else value
    out["recipe"] = recipe.tag
    return out


def recipe_table() -> str:
    """One line per shipped recipe: name@version and its description (``spikeyolo recipes``)."""
    rows = [load_recipe(n) for n in recipe_names()]
    width = max((len(r.tag) for r in rows), default=0)
    return "\n".join(f"{r.tag:<{width}}  {r.description}" for r in rows)
