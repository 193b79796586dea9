"""The config file: what gtag writes (genre names, whitelist, exclude list, separator) and the
defaults of `gtag tag` (thresholds, models).

TOML, read from ``--config FILE``, else ``$GTAG_CONFIG``, else ``config.toml`` in the user config
folder (``~/.config/gtag`` on Linux), which may be absent.  Command-line flags win over the file.
Every mistake (bad TOML, an unknown key, a wrong type) is one ``ConfigError`` naming the file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from gtag.genres.names import normalise

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["DEFAULT_MAX_WINDOWS", "DEFAULT_NAMES", "Config", "ConfigError", "GenrePolicy", "default_config_path", "load_config"]

# What gtag writes for each GTZAN label unless the config maps it otherwise: the ID3v1/Winamp
# genre names that players and beets know.
DEFAULT_NAMES: Mapping[str, str] = MappingProxyType({
    "blues": "Blues", "classical": "Classical", "country": "Country", "disco": "Disco",
    "hiphop": "Hip-Hop", "jazz": "Jazz", "metal": "Metal", "pop": "Pop", "reggae": "Reggae", "rock": "Rock",
})  # fmt: skip

# Windows `gtag predict` and `gtag tag` analyse per track at most (--max-windows; gtag.audio.spans): 20 of
# musicnn's 3 s windows cover a 63 s track whole, so GTZAN's 30 s clips and one-minute excerpts are
# analysed as without a cap, and a 3-minute track is read on a third of its windows, which agree
# with all of them on the genre (README, "Speed"). Here, not in gtag.audio.spans, so the CLI's options
# are built without importing numpy.
DEFAULT_MAX_WINDOWS = 20


class ConfigError(ValueError):
    """The config file is unreadable or invalid; the message is one line naming the file."""


@dataclass(frozen=True)
class GenrePolicy:
    """Which labels gtag may write, and under which names."""

    # label -> written name; a plain dict, so that options pickle (worker processes, Ray)
    names: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_NAMES))
    only: frozenset[str] = frozenset()  # whitelist (normalised label or name keys); empty: all
    exclude: frozenset[str] = frozenset()  # never written (normalised label or name keys)
    # taxonomy nodes without held-out figures that the user wants written anyway (node names)
    enable: frozenset[str] = frozenset()

    def name(self, label: str) -> str:
        """The written name of a label: its configured name; else a lower-case id title-cased, and a
        name that has its own capitals (a learned "R&B", "EDM") as it is."""
        if label in self.names:
            return self.names[label]
        return label.title() if label == label.lower() else label

    def node_name(self, node: str, gtzan: str | None = None) -> str:
        """The written name of a taxonomy node: its GTZAN label's configured name, else the name
        [names] gives the node, else the node's own name."""
        if gtzan is not None and gtzan in self.names:
            return self.names[gtzan]
        return self.names.get(node, node)

    def names_of(self, labels: Iterable[str]) -> list[str]:
        """The written names of ``labels``, in order, each once: a [names] map that sends two labels
        to one name ("blues" and "jazz" both "Blues") writes that name once, not "Blues; Blues"."""
        out: list[str] = []
        seen: set[str] = set()
        for label in labels:
            name = self.name(label)
            if normalise(name) not in seen:
                seen.add(normalise(name))
                out.append(name)
        return out

    def allowed(self, label: str) -> bool:
        """Whether gtag may write ``label``: matched by label or written name, in any spelling."""
        return self.refusal(label) is None

    def refusal(self, label: str) -> str | None:
        """Which list refuses ``label``: ``"exclude"`` (excluded wins over the whitelist), ``"only"``
        (a whitelist without it), or None when gtag may write it."""
        keys = {normalise(label), normalise(self.name(label))}
        if keys & self.exclude:
            return "exclude"
        if self.only and not keys & self.only:
            return "only"
        return None

    def unknown(self, labels: Iterable[str]) -> list[str]:
        """Config entries that match none of ``labels`` (typos, or labels of other models)."""
        labels = list(labels)
        known = {normalise(x) for lab in labels for x in (lab, self.name(lab))}
        bad = [f"names.{lab}" for lab in self.names if lab not in labels and lab not in DEFAULT_NAMES]
        bad += [f"only: {k}" for k in sorted(self.only - known)]
        bad += [f"exclude: {k}" for k in sorted(self.exclude - known)]
        return bad


@dataclass(frozen=True)
class Config:
    """A config file's content; None means "not set here" (the flag or built-in default applies)."""

    policy: GenrePolicy = field(default_factory=GenrePolicy)
    separator: str | None = None  # join several genres into one value with this
    min_confidence: float | None = None
    top_k: int | None = None
    models: tuple[str, ...] | None = None
    depth: str | None = None  # "genre" or "style" (gtag.genres.taxonomy)
    source: Path | None = None  # the file it came from, for messages


def default_config_path() -> Path:
    """``$GTAG_CONFIG``, else ``config.toml`` in the user config folder."""
    env = os.environ.get("GTAG_CONFIG")
    if env:
        return Path(env)
    from platformdirs import user_config_path

    return user_config_path("gtag") / "config.toml"


_KEYS = {"names", "only", "exclude", "separator", "min_confidence", "top_k", "models", "depth", "enable"}


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read ``path`` (must exist), or the default config file (may be absent: built-in defaults)."""
    explicit = path is not None
    path = Path(path) if explicit else default_config_path()
    if not explicit and not path.is_file():
        return Config()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"config {path}: cannot read ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: not valid TOML ({exc})") from exc
    except UnicodeDecodeError as exc:  # TOML is UTF-8: a Latin-1 file is not TOML
        raise ConfigError(f"config {path}: not valid TOML (not UTF-8: byte 0x{exc.object[exc.start]:02x} "
                          f"at offset {exc.start})") from exc
    except RecursionError as exc:  # tomllib recurses once per nesting level: a = [[[[…]]]]
        raise ConfigError(f"config {path}: not valid TOML (nested too deeply)") from exc
    try:
        return parse_config(data, path)
    except RecursionError as exc:
        raise ConfigError(f"config {path}: nested too deeply") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config {path}: {exc}") from exc


def parse_config(data: Mapping[str, object], source: Path | None = None) -> Config:
    """A Config from parsed TOML; TypeError/ValueError with a short message on any mistake."""
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    names = data.get("names", {})
    if not isinstance(names, Mapping):
        raise TypeError("[names] must be a table of label = \"Written Name\"")
    for label, name in names.items():
        if not isinstance(name, str) or not name.strip() or "\0" in name:
            raise TypeError(f"names.{label} must be a non-empty string")
    policy = GenrePolicy(
        names={**DEFAULT_NAMES, **{k: v.strip() for k, v in names.items()}},
        only=_keys(data, "only"),
        exclude=_keys(data, "exclude"),
        enable=_nodes(data, "enable"),
    )
    depth = data.get("depth")
    if depth is not None and depth not in ("genre", "style"):
        raise ValueError('depth must be "genre" or "style"')
    separator = data.get("separator")
    if separator is not None and (not isinstance(separator, str) or not separator.strip() or "\0" in separator):
        raise TypeError('separator must be a visible string such as "; "')
    min_confidence = data.get("min_confidence")
    if min_confidence is not None:
        if isinstance(min_confidence, bool) or not isinstance(min_confidence, (int, float)) or not 0 <= min_confidence <= 1:
            raise ValueError("min_confidence must be a number from 0 to 1")
        min_confidence = float(min_confidence)
    top_k = data.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 10):
        raise ValueError("top_k must be a whole number from 1 to 10")
    models = data.get("models")
    if models is not None:
        models = (models,) if isinstance(models, str) else models
        if not isinstance(models, Sequence) or not models or not all(isinstance(m, str) and m for m in models):
            raise TypeError("models must be a model name or a list of them")
        models = tuple(models)
    return Config(policy, separator, min_confidence, top_k, models, depth, source)


def _nodes(data: Mapping[str, object], key: str) -> frozenset[str]:
    """Taxonomy node names, in any spelling or alias, as the taxonomy names them."""
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key} must be a list of genre or style names")
    from gtag.genres.taxonomy import default_taxonomy

    tax = default_taxonomy()
    out = set()
    for v in value:
        node = tax.find(v)
        if node is None:
            raise ValueError(f"{key}: {v!r} is not a genre or style of gtag's taxonomy")
        out.add(node.name)
    return frozenset(out)


def _keys(data: Mapping[str, object], key: str) -> frozenset[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and normalise(v) for v in value):
        raise TypeError(f"{key} must be a list of genre labels or names")
    return frozenset(normalise(v) for v in value)
