"""beets plugin: genres heard from the audio by gtag, on import and with `beet gtag` (docs/beets.md).

beets builds every plugin on every `beet` call: this module imports beets and the standard library
only; gtag's models and ONNX Runtime load on first use, through gtag's Python API (gtag.api).
Writes go through beets (``item.genres``, ``try_write``, ``store``), so the database, ``id3v23`` and
other plugins' write hooks stay consistent with the files.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import replace

from beets import ui
from beets.dbcore import types
from beets.plugins import BeetsPlugin

# Options that are TagOptions fields, as (config default, CLI flags, optparse type, help). Config
# key, `beet gtag` option and TagOptions field all follow from one line here.
TAG_OPTIONS = {
    "min_confidence": (None, ("-c", "--min-confidence"), "float",
                       "write nothing below this probability (default: the models' own abstain rule)"),
    "top_k": (None, ("-k", "--top-k"), "int", "set up to K genres"),
    "depth": (None, ("--depth",), "string", "genre, or style: also a style where gtag is sure of one (default)"),
}
DEFAULTS = {
    "auto": True,  # the import stage
    "force": False,  # replace genres a person or another plugin set (a finer one is kept)
    "replace": False,  # with force: replace a finer genre too
    "merge": False,  # add to them instead
    "pretend": False,
    "write": None,  # None: beets' import.write
    "model": None,  # model names voting equally (gtag --model); None: the shipped ensemble
    "models": None,  # a folder with manifest.json, or a model learned with `gtag learn` (gtag --models)
    "device": "auto",
    "jobs": None,  # `beet gtag` worker processes; None: gtag's default (cores, memory); the import stage: 1
    "max_windows": 20,
    "cache": True,  # reuse the prediction kept in the library (gtag_prediction) for the same models and audio
    "report": None,
    "config": None,  # gtag's config file (TOML); None: gtag's default one, if any
    "names": {},  # label -> written name, over the config file's [names]
    "only": [],  # whitelist, instead of the config file's
    "exclude": [],  # added to the config file's
    **{key: spec[0] for key, spec in TAG_OPTIONS.items()},
}
STATUS = {"skipped: uncertain": "uncertain", "skipped: low confidence": "low confidence", "skipped: silent": "silent",
          "skipped: excluded by config": "excluded"}


class GtagPlugin(BeetsPlugin):
    item_types = {
        "gtag_genres": types.MULTI_VALUE_DSV,  # what gtag heard (top-k), even when it abstained
        "gtag_confidence": types.Float(3),
        "gtag_status": types.STRING,  # tagged, unchanged, uncertain, low confidence, silent, failed
        "gtag_reason": types.STRING,
        "gtag_written": types.MULTI_VALUE_DSV,  # the genres gtag set: genres == gtag_written are gtag's own
        "gtag_before": types.MULTI_VALUE_DSV,  # the genres the item held before gtag set gtag_written
        "gtag_model": types.STRING,  # the models' signature
        "gtag_analyzed": types.DATE,
        "gtag_prediction": types.STRING,  # JSON: the probabilities, for another decision without analysis
    }

    def __init__(self) -> None:
        super().__init__()
        self.config.add(DEFAULTS)
        self._predictor = None
        self._broken: str | None = None  # the models could not load: the import stage is off
        self._to_write: set[int] = set()  # ids of items the import stage changed, written once placed
        if self.config["auto"].get(bool):
            self.import_stages = [self.imported]
            self.register_listener("import_task_files", self.files_placed)

    # Loading, on first use.

    def predictor(self, jobs: int = 1):
        """gtag's predictor, loaded once (ModelError, one line, when it cannot be)."""
        if self._predictor is None:
            from gtag.api import load_predictor

            c = self.config
            self._predictor = load_predictor(c["model"].get(), c["models"].get(), c["device"].as_str(), jobs=jobs,
                                             max_windows=c["max_windows"].get(int), threads=1 if jobs == 1 else 0)
        self._predictor.jobs = max(1, jobs)
        return self._predictor

    def options(self):
        """TagOptions from beets' config (`gtag:`; the command's flags are set over it), with gtag's
        own config file under it: its names, whitelist and exclude list, min_confidence, top_k."""
        from gtag.api import GenrePolicy, TagOptions, load_config, parse_config

        c = self.config
        path = c["config"].get()
        file = load_config(path)  # ConfigError (one line) on a bad file
        here = parse_config({"names": c["names"].get(dict), "only": c["only"].as_str_seq(),
                             "exclude": c["exclude"].as_str_seq()}, None)
        policy = GenrePolicy(names={**file.policy.names, **here.policy.names}, only=here.policy.only or file.policy.only,
                             exclude=file.policy.exclude | here.policy.exclude)
        fields = {key: c[key].get() for key in TAG_OPTIONS}
        fields["min_confidence"] = fields["min_confidence"] if fields["min_confidence"] is not None else file.min_confidence
        fields["top_k"] = fields["top_k"] or file.top_k or 1
        fields["depth"] = fields["depth"] or file.depth or "style"
        if fields["depth"] not in ("genre", "style"):
            raise ui.UserError(f"gtag: depth must be genre or style, not {fields['depth']!r}")
        if c["force"].get(bool) and c["merge"].get(bool):
            raise ui.UserError("gtag: force replaces genres and merge adds to them: pick one")
        force = c["force"].get(bool) or c["replace"].get(bool)
        return TagOptions(force=force, merge=c["merge"].get(bool), replace=c["replace"].get(bool),
                          policy=replace(policy, enable=file.policy.enable), **fields)

    # The import stage.

    def imported(self, session, task) -> None:
        """Newly imported items get genres as they arrive; a model that cannot load is reported once
        and the stage turns itself off; a track that fails is logged and the import goes on."""
        if self._broken is not None:
            return
        from gtag.api import ConfigError, ModelError

        try:
            opts, predictor = self.options(), self.predictor(jobs=1)
            _check_names(opts, predictor)
        except (ModelError, ConfigError, ui.UserError) as exc:
            self._broken = str(exc)
            self._log.error("gtag is off for this import: {}", exc)
            return
        pretend = self.config["pretend"].get(bool)
        for item, outcome in self.process(task.imported_items(), opts, predictor, pretend):
            if outcome.get("changed"):
                self._to_write.add(item.id)

    def files_placed(self, session, task) -> None:
        """beets writes tags on import only when it applied metadata (not as-is, -A): write the
        library copies of what the stage changed, once they are in place, when import.write is on."""
        changed = [item for item in task.imported_items() if item.id in self._to_write]
        self._to_write.difference_update(item.id for item in changed)
        if not session.config["write"].get(bool) or getattr(task, "apply", False):
            return  # beets wrote them itself (the item it wrote holds the stage's genres)
        for item in changed:
            if item.try_write():
                item.store()  # the new mtime

    # The command.

    def commands(self):
        cmd = ui.Subcommand("gtag", help="set genres heard from the audio (gtag)")
        p = cmd.parser
        p.add_option("-a", "--album", action="store_true", help="match albums: an album's tracks vote together")
        p.add_option("-p", "--pretend", action="store_true", default=None, help="show existing → proposed, change nothing")
        p.add_option("-f", "--force", action="store_true", default=None,
                     help="replace genres a person or plugin set (keeps a finer one: Alt. Rock under Rock)")
        p.add_option("--replace", action="store_true", default=None, help="like --force, and replace a finer genre too")
        p.add_option("--merge", action="store_true", default=None, help="add to the genres items have (no doubles)")
        p.add_option("-w", "--write", action="store_true", default=None, help="write tags to files (default: import.write)")
        p.add_option("-W", "--nowrite", action="store_false", dest="write", help="store in the library only")
        for key, (_, flags, kind, text) in TAG_OPTIONS.items():
            p.add_option(*flags, dest=key, type=kind, default=None, help=text)
        p.add_option("-m", "--model", dest="model", default=None, metavar="NAME[,NAME]", help="models voting equally")
        p.add_option("--models", dest="models", default=None, metavar="NAME|DIR", help="a learned model or a models folder")
        p.add_option("-j", "--jobs", dest="jobs", type="int", default=None, help="worker processes")
        p.add_option("--no-cache", dest="cache", action="store_false", default=None,
                     help="analyse again, even where the library keeps a prediction")
        p.add_option("--report", dest="report", default=None, metavar="FILE", help="per-item report (.json or .csv)")
        cmd.func = self.command
        return [cmd]

    def command(self, lib, opts, args) -> None:
        from gtag.api import ConfigError, ModelError, write_report

        self.config.set_args({k: v for k, v in vars(opts).items() if k not in ("album", "write")})
        report = self.config["report"].get()
        if report and not str(report).lower().endswith((".json", ".csv")):
            raise ui.UserError("gtag: --report must end in .json or .csv")
        if report and not os.path.isdir(os.path.dirname(os.path.abspath(report))):
            raise ui.UserError(f"gtag: --report {report}: its folder does not exist")  # before any work
        pretend = self.config["pretend"].get(bool)
        cfg_write = self.config["write"].get()
        write = ui.should_write(opts.write if opts.write is not None else cfg_write)
        objs = list(lib.albums(args) if opts.album else lib.items(args))
        items = [i for a in objs for i in a.items()] if opts.album else objs
        jobs = self.config["jobs"].get()
        if jobs is None:
            from gtag.api import default_jobs

            jobs = max(1, min(default_jobs(), len(items)))
        try:
            options, predictor = self.options(), self.predictor(jobs=jobs)
            _check_names(options, predictor)
        except (ModelError, ConfigError) as exc:
            raise ui.UserError(f"gtag: {exc}") from None
        records = []
        groups = [list(a.items()) for a in objs] if opts.album else [items]
        try:
            for album, members in zip(objs if opts.album else [None], groups):
                for item, outcome in self.process(members, options, predictor, pretend, write, album=album is not None):
                    records.append(outcome["record"])
                    _show(item, outcome, pretend)
                if album is not None and not pretend:
                    self._album_genres(album, members, options)
        finally:  # a stopped run (Ctrl-C) reports what it did
            counts = Counter(STATUS.get(r.status, r.status.replace("skipped: has genre", "kept")) for r in records)
            ui.print_(f"gtag: {len(records)} items{' (pretend: nothing changed)' if pretend else ''}: "
                      + ", ".join(f"{n} {status}" for status, n in counts.most_common()))
            if report:
                try:
                    write_report(records, report, options.top_k)
                except OSError as exc:
                    raise ui.UserError(f"gtag: report {report} not written ({exc.strerror or exc}); "
                                       "the items themselves are done") from None
                ui.print_(f"report: {report}")

    # One item, one decision.

    def process(self, items, opts, predictor, pretend: bool, write: bool = False, album: bool = False):
        """Yield (item, outcome) for each of ``items``: predicted (or the library's kept prediction
        reused), decided, and set (stored, written when ``write``) unless ``pretend``. ``album``:
        the items vote together and each gets the album's decision."""
        from gtag.api import Record

        todo, outcomes = [], {}
        for item in items:
            existing = list(item.get("genres", with_album=False) or [])
            rec = Record(str(item.filepath), existing=existing)
            outcomes[item.id] = {"record": rec, "changed": False}
            own = bool(existing) and existing == list(item.get("gtag_written") or [])
            keep = bool(existing) and not (opts.force or opts.merge or own)
            if keep:
                rec.status = "skipped: has genre"
                if not album:  # an album's tracks that keep their genres still vote
                    continue
            todo.append((item, own, keep))
        stored = {item.id: self._kept(item, predictor) for item, _, _ in todo}
        # Predicted in order, a few files ahead (worker processes): each item is set as its prediction
        # arrives, so a stopped run keeps every item done before it.
        fresh = predictor.predict_many([i.filepath for i, _, _ in todo if stored[i.id] is None])
        try:
            preds, vote = {}, None
            if album:  # every track first: the album's vote decides for each
                preds = {i.id: stored[i.id] or next(fresh)[1] for i, _, _ in todo}
                good = [p for p in preds.values() if not isinstance(p, Exception)]
                vote = predictor.album_vote(good) if good else None
            plan = {i.id: (own, keep) for i, own, keep in todo}
            for item in items:
                own, keep = plan.get(item.id, (False, True))
                if not keep:
                    pred = preds[item.id] if album else stored[item.id] or next(fresh)[1]
                    self._apply(item, own, pred, vote, opts, predictor, outcomes[item.id], pretend, write)
                yield item, outcomes[item.id]
        finally:
            fresh.close()  # its worker processes stop with it

    def _apply(self, item, own, pred, vote, opts, predictor, outcome, pretend, write) -> None:
        try:
            self._decide(item, own, pred, vote, opts, predictor, outcome, pretend, write)
        except Exception as exc:  # noqa: BLE001 - one item's trouble never ends the run
            outcome["record"].status, outcome["record"].error = "failed", f"{item.filepath}: {exc}"
            self._log.warning("{}: {}", item.filepath, exc)

    def _kept(self, item, predictor):
        """The prediction the library keeps for ``item``, when made by these models on this audio."""
        if not self.config["cache"].get(bool) or item.get("gtag_model") != predictor.signature:
            return None
        from gtag.api import prediction_from_dict

        try:
            d = json.loads(item.get("gtag_prediction") or "")
            if d.pop("audio", None) != _audio_key(item):
                return None
            return prediction_from_dict(d, str(item.path))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def _decide(self, item, own, pred, vote, opts, predictor, outcome, pretend, write) -> None:
        from gtag.api import SilentAudio, prediction_to_dict

        rec = outcome["record"]
        now = {"gtag_model": predictor.signature, "gtag_analyzed": time.time()}
        if isinstance(pred, Exception):
            rec.status = "skipped: silent" if isinstance(pred, SilentAudio) else "failed"
            rec.error = str(pred)
            if rec.status == "failed":
                self._log.warning("{}", pred)
            if not pretend:
                item.update({**now, "gtag_status": STATUS.get(rec.status, rec.status), "gtag_reason": rec.error})
                item.store()
            return
        # Genres gtag set itself are refreshed without --force: decided again over what the item held
        # before gtag (gtag_before), merged into it when there was something (--force: replacing it).
        base = list(item.get("gtag_before") or []) if own else rec.existing
        decision = predictor.decide(vote or pred, base, replace(opts, merge=bool(base) and not opts.force) if own else opts)
        if own and decision.status in ("tagged", "unchanged"):
            decision = replace(decision, status="unchanged" if decision.genres == rec.existing else "tagged")
        rec.genre, rec.confidence = decision.genre, decision.confidence
        rec.probabilities = {lab: round(float(p), 4) for lab, p in zip(pred.labels, pred.probabilities)}
        rec.genres, rec.reason = decision.chosen, decision.reason
        rec.status = decision.status
        if decision.status in ("tagged", "unchanged"):
            rec.written = decision.genres
        elif decision.status == "skipped: low confidence":
            rec.reason = "below the minimum confidence"
        if pretend:
            return
        kept = dict(prediction_to_dict(pred, windows=False), audio=_audio_key(item))
        item.update({**now, "gtag_genres": predictor.heard(vote or pred, opts),
                     "gtag_confidence": (vote or pred).confidence, "gtag_prediction": json.dumps(kept),
                     "gtag_status": "tagged" if own and rec.status == "unchanged" else STATUS.get(rec.status, rec.status),
                     "gtag_reason": rec.reason or ""})
        if decision.status == "tagged":
            item.genres = decision.genres
            item["gtag_written"], item["gtag_before"] = decision.genres, base  # what gtag replaced stays known
            outcome["changed"] = True
            if write and not item.try_write():
                rec.status, rec.error = "failed", f"{item.filepath}: not written (see the line above)"
                item["gtag_status"], item["gtag_reason"] = "failed", "the write failed; the library holds the genres"
        item.store()

    def _album_genres(self, album, members, opts) -> None:
        """The album's own genres: its tracks' when they agree, set where it has none (or force)."""
        sets = {tuple(i.get("genres", with_album=False) or []) for i in members}
        if len(sets) == 1 and (genres := list(sets.pop())) and (opts.force or not album.genres):
            album.genres = genres
            album.store(inherit=False)  # never flattens a track's own genres


def _check_names(opts, predictor) -> None:
    """A name, whitelist or exclude entry that matches no genre of the models is a typo: an error,
    not a silent no-op (as in `gtag tag`)."""
    from gtag.api import ConfigError

    unknown = opts.policy.unknown(predictor.labels)
    if unknown:
        raise ConfigError(f"unknown genre {', '.join(unknown)} (labels: {', '.join(predictor.labels)})")


def _audio_key(item) -> list:
    """What identifies the audio (not its tags) of an item: a replaced recording changes it, a
    move, a rename or a tag write does not."""
    return [round(float(item.get("length") or 0), 3), int(item.get("samplerate") or 0),
            int(item.get("channels") or 0), str(item.get("format") or "")]


def _show(item, outcome, pretend: bool) -> None:
    rec = outcome["record"]
    before = "; ".join(rec.existing) or "—"
    conf = f"{rec.confidence:.0%}" if rec.confidence is not None else ""
    if rec.status in ("tagged", "unchanged"):
        verb = "already" if rec.status == "unchanged" else ("would set" if pretend else "set")
        ui.print_(f"{item}: {before} → {'; '.join(rec.written)} ({conf}, {verb})")
    elif rec.status == "skipped: has genre":
        if pretend:
            ui.print_(f"{item}: has {before}, kept (--force replaces, --merge adds)")
    elif rec.status == "failed":
        ui.print_(f"{item}: failed: {rec.error}")
    else:
        ui.print_(f"{item}: {STATUS.get(rec.status, rec.status)} (best guess {rec.genre or '?'} {conf}"
                  f"{': ' + rec.reason if rec.reason else ''}), left as {before}")
