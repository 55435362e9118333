"""The checks of `migrate verify`, each a pure function of finished runs returning a ``Check``."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from migrator.verification.failures import failure_tail
from migrator.verification.runs import Run

# Normalisation of stdout before the 1-process comparison: timings and timestamps only.
NORMALISE = (
    # time.ctime(): "Sun Dec  6 07:14:05 2026"
    (re.compile(r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[ _](?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
                r"[ _]+\d{1,2}[ _]\d\d:\d\d:\d\d[ _]\d{4}\b"), "<TIMESTAMP>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"), "<TIMESTAMP>"),
    # a date and time as file and folder names carry them: 20261206-055204, 2026-12-06_05-52-04
    (re.compile(r"(?<!\d)(?:19|20)\d\d([-_]?)(?:0[1-9]|1[0-2])\1(?:0[1-9]|[12]\d|3[01])[-_T]?"
                r"(?:[01]\d|2[0-3])([-_]?)[0-5]\d\2[0-5]\d(?!\d)"), "<TIMESTAMP>"),
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b"), "<TIME>"),
    # (a value's padding goes with it: right-aligned times are padded to their width)
    (re.compile(r"(\s)?\s*\b\d+(?:\.\d+)?\s?(?:ms|us|µs|s|sec|secs|seconds|min|mins|minutes)\b"), r"\1<DURATION>"),
    (re.compile(r"(\s)?\s*\b\d+(?:\.\d+)?\s?(?:it/s|s/it|samples/s|img/s|images/s|tokens/s|batches/s)"), r"\1<RATE>"),
    (re.compile(r"(?i)\b(time|elapsed|took|duration)((?:\s*[:=])?)(\s)?\s*\d+(?:\.\d+)?"), r"\1\2\3<DURATION>"),
    # a time per unit written before its value: "ms/batch 26.12" (word_language_model)
    (re.compile(r"(?i)\b((?:ms|us|s|sec)/(?:batch|step|it|iter|iteration|epoch|sample|image|img))"
                r"((?:\s*[:=])?)(\s)?\s*\d+(?:\.\d+)?"), r"\1\2\3<DURATION>"),
)


def normalise(text: str) -> str:
    for pattern, repl in NORMALISE:
        text = pattern.sub(repl, text)
    return text


# Timestamps in the paths of written files, masked before files are paired between runs (a run
# folder named after the clock differs run to run): a date YYYYMMDD (separators - _ . allowed,
# the same between its parts) optionally followed by a time HHMM[SS][.fraction] (separators
# - _ : . allowed), or epoch seconds (10 digits from 1...) or milliseconds (13), not part of a
# longer number. The child bootstrap gets the pattern (TM_VERIFY_STAMP) to pair checkpoints.
STAMP = re.compile(
    r"(?<!\d)(?:(?:19|20)\d\d([-_.]?)(?:0[1-9]|1[0-2])\1(?:0[1-9]|[12]\d|3[01])"
    r"(?:[-_T ]?(?:[01]\d|2[0-3])([-_:.]?)[0-5]\d(?:\2[0-5]\d)?(?:[.,]\d+)?)?"
    r"|1\d{9}(?:\d{3})?)(?!\d)")


def pair_path(path: str) -> str:
    """``path`` (relative, as recorded) with its timestamps masked: the key files pair on."""
    return STAMP.sub("<TIMESTAMP>", path)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    evidence: str
    details: str = ""  # multi-line (stacks), printed indented under the line
    applies: bool = True  # False: the check cannot apply here (n/a, informational; it passes)

    @property
    def status(self) -> str:
        return "n/a" if not self.applies else "pass" if self.passed else "fail"

    def to_json(self) -> dict:
        return {"name": self.name, "passed": self.passed, "status": self.status,
                "evidence": self.evidence, "details": self.details}


def _tail(text: str, lines: int = 3) -> str:
    rows = [r for r in text.strip().splitlines() if r.strip()]
    return " | ".join(rows[-lines:]) if rows else "(no output)"


def exited(name: str, run: Run, timeout: float) -> Check:
    if run.hung:
        ranks = sorted(run.stacks, key=lambda r: (len(r), r))
        details = "\n".join(f"rank {r}:\n{_frames(run.stacks[r], str(run.folder))}" for r in ranks)
        return Check(name, False, f"hang: still running after {timeout:g}s; stacks of ranks "
                     f"{', '.join(ranks) or '(none dumped)'} below", details)
    if run.returncode != 0:  # a launcher's own summary says nothing: the failing rank's traceback
        tail, details = failure_tail(run.stderr) or (_tail(run.stderr), run.stderr[-3000:])
        return Check(name, False, f"exit {run.returncode} after {run.seconds:.1f}s: {tail}", details)
    return Check(name, True, f"exit 0 in {run.seconds:.1f}s")


def _frames(dump: str, folder: str, most: int = 12) -> str:
    """The main thread's frames of a faulthandler dump, innermost first, down to the script's
    innermost frame (at least 4, at most ``most``)."""
    blocks = re.split(r"\n(?=(?:Current thread|Thread) 0x)", dump.strip())
    main = next((b for b in blocks if b.startswith("Current thread")), blocks[0])
    rows = main.splitlines()
    frames = rows[1:]
    mine = next((i for i, r in enumerate(frames) if folder in r), len(frames))
    keep = frames[:min(max(mine + 1, 4), most)]
    return "\n".join(["  " + rows[0], *("  " + r for r in keep)])


def same_stdout(name: str, expected: str, actual: str, again: str | None = None) -> Check:
    """The port's stdout is the original's (timings normalised). ``again``: the stdout of a second
    run of the original; where the port differs only on lines the original itself changes from
    run to run, the check does not apply (n/a): an unseeded original cannot be compared."""
    exp, act = normalise(expected).splitlines(), normalise(actual).splitlines()
    if exp == act:
        return Check(name, True, f"identical ({len(exp)} lines, timings normalised)")
    unstable = _unstable_stdout(exp, normalise(again).splitlines(), act) if again is not None else ""
    if unstable:
        return Check(name, True, unstable, applies=False)
    for i, (e, a) in enumerate(zip(exp, act)):
        if e != a:
            return Check(name, False, f"line {i + 1}: expected {e!r}, got {a!r}")
    n = min(len(exp), len(act))
    extra = (act[n] if len(act) > n else exp[n])
    which = "extra line" if len(act) > n else "missing line"
    return Check(name, False, f"{which} {n + 1}: {extra!r} ({len(act)} lines instead of {len(exp)})")


_NOT_DETERMINISTIC = "the original is not deterministic (run twice, {what})"


def _unstable_stdout(exp: list[str], rerun: list[str], act: list[str]) -> str:
    """Evidence that every line where the port's stdout ``act`` differs from the original's
    ``exp`` is a line the original's second run ``rerun`` changed too ('' when not so)."""
    if rerun == exp:
        return ""
    same = next((i for i, (e, r) in enumerate(zip(exp, rerun)) if e != r), min(len(exp), len(rerun)))
    if act[:same] != exp[:same]:  # a difference where the original is stable
        return ""
    if len(exp) == len(rerun):
        if len(act) != len(exp) or any(e != a and e == r for e, r, a in zip(exp, rerun, act)):
            return ""
        i = next(i for i, (e, a) in enumerate(zip(exp, act)) if e != a)
        what = f"it printed {exp[i]!r} then {rerun[i]!r} on line {i + 1}"
    else:
        what = f"it printed {len(exp)} lines then {len(rerun)}"
    return (_NOT_DETERMINISTIC.format(what=what) + ": the port's stdout cannot be compared with it "
            "(seed the script to compare)")


def written(run: Run) -> dict[str, set[str]]:
    """Relative path, timestamps masked (``pair_path``) -> ranks that wrote it, for files that
    still exist at the end of ``run``."""
    out: dict[str, set[str]] = {}
    for r in run.of("write"):
        if (run.folder / r["path"]).is_file():
            out.setdefault(pair_path(r["path"]), set()).add(r["rank"])
    return out


def same_files(name: str, original: Run, port: Run, again: Run | None = None) -> Check:
    """The port writes the original's files (paired with timestamps masked); its checkpoints
    have the original's keys, shapes, dtypes and values. ``again``: a second run of the
    original; where every file whose values differ differs between the original's own two runs,
    the values cannot be compared (n/a; keys, shapes and dtypes still must match)."""
    exp, got = set(written(original)), set(written(port))
    if exp != got:
        missing, extra = sorted(exp - got), sorted(got - exp)
        parts = ([f"not written: {', '.join(missing)}"] if missing else []) + \
                ([f"written only by the port: {', '.join(extra)}"] if extra else [])
        return Check(name, False, "; ".join(parts))
    bad = _checkpoint_differences(original, port)
    if bad:
        return Check(name, False, bad)
    differ = _value_differences(original, port)
    if not differ:
        return Check(name, True, f"same {len(exp)} file(s): {', '.join(sorted(exp)) or 'none'}")
    moving = _value_differences(original, again) if again is not None else {}
    path = min(differ)
    if not set(differ) <= set(moving):
        path = min(set(differ) - set(moving))
        key, value, want = differ[path]
        return Check(name, False, f"{path}: {key} differs from the original's (sum {value:.6g} vs {want:.6g})")
    key, value, want = moving[path]
    what = f"its {path} had {key} sum {want:.6g} then {value:.6g}"
    return Check(name, True, _NOT_DETERMINISTIC.format(what=what) + f": the values of {', '.join(sorted(differ))} "
                 f"cannot be compared (same {len(exp)} file(s); keys, shapes and dtypes as the original's)",
                 applies=False)


def _checkpoints(run: Run, rank: str | None = None) -> dict[str, dict]:
    return {pair_path(r["path"]): r for r in run.of("checkpoint") if rank is None or r["rank"] == rank}


def _value_differences(reference: Run, other: Run) -> dict[str, tuple[str, float, float]]:
    """Path -> (first key, its sum in ``other``, in ``reference``) for each checkpoint of
    ``other`` whose values differ from ``reference``'s (keys and shapes alike)."""
    ref, out = _checkpoints(reference), {}
    for path, rec in sorted(_checkpoints(other).items()):
        want = ref.get(path)
        if not rec["ok"] or want is None or not want["ok"] or set(want["keys"]) != set(rec["keys"]):
            continue
        for key in sorted(want["keys"]):
            w, g = want["keys"][key], rec["keys"][key]
            if w[0] == g[0] and not math.isclose(w[1], g[1], rel_tol=1e-6, abs_tol=1e-9):
                out[path] = (key, g[1], w[1])
                break
    return out


def _checkpoint_differences(reference: Run, other: Run, *, rank: str | None = None) -> str:
    """The first checkpoint of ``other`` that does not load or whose keys, shapes or dtypes are not
    ``reference``'s ('' when none); values: ``_value_differences``."""
    ref, got = _checkpoints(reference), _checkpoints(other, rank)
    for path, rec in sorted(got.items()):
        if not rec["ok"]:
            return f"{path} does not load with torch.load: {rec['error']}"
        want = ref.get(path)
        if want is None or not want["ok"]:
            continue
        wk, gk = want["keys"], rec["keys"]
        if set(wk) != set(gk):
            return f"{path}: {_key_difference(set(wk), set(gk))}"
        for key in sorted(wk):
            if wk[key][0] != gk[key][0]:
                return f"{path}: {key} has shape {gk[key][0]} instead of {wk[key][0]}"
            if wk[key][2:3] != gk[key][2:3]:
                return f"{path}: {key} is {(gk[key][2:3] or ['?'])[0]} instead of {(wk[key][2:3] or ['?'])[0]}"
    return ""


_WRAPPERS = ("module.", "_orig_mod.", "_forward_module.", "_original_module.")


def _key_difference(want: set[str], got: set[str]) -> str:
    """Why the keys differ; a wrapper's prefix (DDP's ``module.``, torch.compile's
    ``_orig_mod.``) is named: the port saved the wrapped model's state dict."""
    for prefix in _WRAPPERS:
        extra = sorted(k for k in got - want if prefix in k)
        if extra and {k.replace(prefix, "") for k in got} == {k.replace(prefix, "") for k in want}:
            return (f"keys carry the wrapper prefix {prefix!r} ({extra[0]!r}): the port saved the "
                    "wrapped model's state dict; save the unwrapped model's")
    diff = sorted(want ^ got)
    return f"keys differ from the original's ({', '.join(diff[:5])})"


def rank_silent(name: str, run: Run) -> Check:
    for rank in sorted(run.rank_stdout, key=lambda r: (len(r), r)):
        text = run.rank_stdout[rank]
        if rank != "0" and text.strip():
            first = next(line for line in text.splitlines() if line.strip())
            return Check(name, False, f"rank {rank} printed {len(text.splitlines())} line(s), first: {first!r}")
    ranks = sorted(run.rank_stdout)
    if len(ranks) < 2:
        return Check(name, False, f"saw the stdout of rank(s) {ranks} only: the launcher did not start "
                     "every rank")
    return Check(name, True, f"ranks {', '.join(r for r in ranks if r != '0')} printed nothing")


def files_once(name: str, run: Run, single: Run) -> Check:
    """Each file only by rank 0; all the 1-process port's files (when the run finished)."""
    writers = written(run)
    for path, ranks in sorted(writers.items()):
        if ranks != {"0"}:
            return Check(name, False, f"{path} written by ranks {', '.join(sorted(ranks))}")
    missing = sorted(set(written(single)) - set(writers))
    if missing and run.returncode == 0:
        return Check(name, False, f"not written on N processes: {', '.join(missing)}")
    return Check(name, True, f"{len(writers)} file(s), each by rank 0 only")


def modules_saved(run: Run) -> dict[str, dict[str, str]]:
    """Path -> {dotted key: class} of the state dicts a module's ``state_dict()`` made, per
    checkpoint of ``run`` (the original): the classes the port's checkpoints must load into."""
    return {path: rec["modules"] for path, rec in _checkpoints(run).items() if rec.get("modules")}


def checkpoints_load(name: str, run: Run, original: Run) -> Check:
    loaded = _checkpoints(run, "0")
    if not loaded:
        return Check(name, True, "no checkpoint written")
    bad = _checkpoint_differences(original, run, rank="0")
    if bad:
        return Check(name, False, bad)
    into, absent = [], []
    for path, rec in sorted(loaded.items()):
        for key, result in sorted((rec.get("into") or {}).items()):
            where = f"{path}[{key!r}]" if key else path
            if result["ok"] is None:
                absent.append(f"{where}: {result['error']}")
            elif not result["ok"]:
                return Check(name, False, f"{where} does not load into the original's "
                             f"{result['class']} (load_state_dict strict): {result['error']}")
            else:
                into.append(f"{where} into {result['class']}")
    evidence = f"{', '.join(sorted(loaded))} load; keys, shapes and dtypes as the original's"
    if into:
        evidence += f"; load_state_dict(strict=True): {', '.join(into)}"
    if absent:
        evidence += f"; not loaded into a module: {'; '.join(absent)}"
    return Check(name, True, evidence)


def ranks_in_sync(name: str, run: Run) -> Check:
    per_rank = {r["rank"]: r["params"] for r in run.of("params")}
    if len(per_rank) < 2:
        return Check(name, False, f"parameters reported by rank(s) {sorted(per_rank)} only")
    ref = per_rank.get("0")
    if not ref:
        return Check(name, True, "no optimizer stepped: nothing to compare")
    for rank, params in sorted(per_rank.items()):
        if len(params) != len(ref):
            return Check(name, False, f"rank {rank} stepped {len(params)} parameters, rank 0 {len(ref)}")
        for i, (a, b) in enumerate(zip(ref, params)):
            if a != b:
                return Check(name, False, f"parameter #{i} (shape {a[0]}) differs between rank 0 "
                             f"and rank {rank} (sum {a[1]:.9g} vs {b[1]:.9g}): ranks do not synchronise")
    return Check(name, True, f"{len(ref)} stepped parameters identical on ranks {', '.join(sorted(per_rank))}")


def placement(name: str, run: Run) -> Check:
    bad = [r for r in run.of("placement") if not r.get("ok", True)]
    devices = sorted({(r["rank"], r["device"]) for r in run.of("device")})
    if bad:
        r = bad[0]
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        details = "\n".join(f"rank {b['rank']} {b['site']}: {b['message']}" for b in bad[:20])
        return Check(name, False, f"rank {r['rank']} at {r['site']}: {r['message']}{more}", details)
    used = ", ".join(f"rank {rk}→{d}" for rk, d in devices) or "no CUDA device used"
    return Check(name, True, used)


# A number as printed: sign, digits, decimals, exponent; not part of a name (conv1, cuda:1 stays).
_NUMBER = re.compile(r"(?<![\w.:])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")


def shape(line: str) -> str:
    """The line with its numbers masked (after the timing normalisation)."""
    return _NUMBER.sub("#", normalise(line))


def _numbers(line: str) -> list[str]:
    return _NUMBER.findall(normalise(line))


def _unit(token: str) -> float:
    """One unit of the last printed digit of ``token``."""
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.split(".", 1)[1]) if "." in mantissa else 0
    return 10.0 ** (int(exponent or 0) - decimals)


def within_last_digit(a: str, b: str) -> bool:
    return abs(float(a) - float(b)) <= max(_unit(a), _unit(b)) * (1 + 1e-9)


def _pairs(first: list[str], second: list[str]) -> list[tuple[int, int]]:
    """(i, j): the k-th line of a shape in ``first`` with the k-th line of that shape in ``second``;
    only lines with numbers."""
    seen: dict[str, list[int]] = {}
    for j, line in enumerate(second):
        if _numbers(line):
            seen.setdefault(shape(line), []).append(j)
    used: dict[str, int] = {}
    out = []
    for i, line in enumerate(first):
        key = shape(line)
        k = used.get(key, 0)
        if _numbers(line) and k < len(seen.get(key, ())):
            out.append((i, seen[key][k]))
            used[key] = k + 1
    return out


def _same_model(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) for x, y in zip(a, b))


def _differing(first: list[str], second: list[str], pairs: list[tuple[int, int]]) -> int:
    return sum(not all(within_last_digit(x, y) for x, y in zip(_numbers(first[i]), _numbers(second[j])))
               for i, j in pairs)


def metrics_equal(name: str, single: Run, many: Run, processes: int) -> Check:
    """Rank 0's evaluation numbers on N processes equal the 1-process port's, within one unit of
    the last printed digit, where the model is identical.

    Hard only for lines both runs printed in evaluation mode (every module the script switched
    with ``.train()`` / ``.eval()`` was in eval mode) with equal parameter and buffer
    fingerprints at that moment (before training, a loaded checkpoint, data-parallel-exact
    training): such a metric, reduced over the sharded data, is the 1-process number. Every
    other line (training losses of rank 0's shard, a model trained on sharded data) legitimately
    differs: counted, informational."""
    if single.returncode != 0 or many.returncode != 0:
        return Check(name, True, "a run did not finish", applies=False)
    evals_1 = [r for r in single.of("line") if r["rank"] == "0"]
    evals_n = [r for r in many.of("line") if r["rank"] == "0"]
    texts_1, texts_n = [r["text"] for r in evals_1], [r["text"] for r in evals_n]
    compared = 0
    for i, j in _pairs(texts_1, texts_n):
        if not _same_model(evals_1[i]["fp"], evals_n[j]["fp"]):
            continue
        compared += 1
        for x, y in zip(_numbers(texts_1[i]), _numbers(texts_n[j])):
            if not within_last_digit(x, y):
                return Check(name, False, f"rank 0 printed {texts_n[j]!r}, 1 process {texts_1[i]!r}: "
                             f"{y} vs {x}, with the same model in eval mode (a metric not reduced "
                             "over the ranks' shards?)")
    out_1, out_n = single.stdout.splitlines(), many.rank_stdout.get("0", "").splitlines()
    pairs = _pairs(out_1, out_n)
    other = f"{_differing(out_1, out_n, pairs)} of {len(pairs)} numeric line(s) differ overall (informational: " \
            "training on sharded data changes the numbers)"
    if not compared:
        return Check(name, True, "no line printed in eval mode by a model identical on 1 and "
                     f"{processes} processes; {other}", applies=False)
    return Check(name, True, f"{compared} eval-mode line(s) of an identical model equal within one unit "
                 f"of the last digit; {other}")
