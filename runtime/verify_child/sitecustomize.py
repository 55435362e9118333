"""Bootstrap loaded into every process `migrate verify` starts (as sitecustomize): records the
rank's file writes, stdout, stack on SIGUSR1, stepped parameters and checkpoints at exit.

Active only when ``TM_VERIFY_DIR`` is set; stdlib only until the script imports torch (the
simulated-GPU mode, ``TM_VERIFY_SIMULATE``, imports torch up front). Each worker process (a
process with ``RANK``, or the one process of a 1-process run: ``TM_VERIFY_SINGLE``) writes
``<dir>/audit-<rank>-<pid>.jsonl`` (``start``, ``write``, ``device``, ``placement``,
``checkpoint``, ``line``, ``params``, ``exit`` records) and ``stack-<rank>-<pid>.txt`` (faulthandler); a
worker of an N-process run has its stdout (fd 1) in ``stdout-<rank>-<pid>.txt``. Launcher
processes only get the stack dump.
"""

import atexit
import faulthandler
import json
import os
import signal
import sys
import weakref

_DIR = os.environ.get("TM_VERIFY_DIR")
_CKPT_SUFFIXES = (".pt", ".pth", ".ckpt", ".tar", ".bin", ".pkl")


def _install(directory):
    rank = os.environ.get("RANK") or ("0" if os.environ.get("TM_VERIFY_SINGLE") else "-")
    pid = os.getpid()
    stacks = open(os.path.join(directory, f"stack-{rank}-{pid}.txt"), "w")  # noqa: SIM115
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    if rank == "-":  # a launcher: it counts the (simulated) GPUs, it runs no script
        if os.environ.get("TM_VERIFY_SIMULATE"):
            _simulate().install_queries(int(os.environ.get("TM_VERIFY_DEVICES") or 1))
        return
    faulthandler.enable(file=stacks)
    root = os.path.realpath(os.environ.get("TM_VERIFY_SCRIPT_DIR", os.getcwd()))
    log = open(os.path.join(directory, f"audit-{rank}-{pid}.jsonl"), "a", buffering=1)  # noqa: SIM115
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    busy, written, saved, stepped = [], [], set(), {}
    owners, classes, switched, kept = [], {}, {}, {}
    wanted = json.loads(os.environ.get("TM_VERIFY_MODULES") or "{}")  # path -> {key: class}
    wanted_classes = {c for keys in wanted.values() for c in keys.values()}

    def record(kind, **fields):
        busy.append(1)
        try:
            log.write(json.dumps(dict(kind=kind, rank=rank, pid=pid, **fields)) + "\n")
        finally:
            busy.pop()

    def wrote(path, via):
        path = os.path.realpath(os.fsdecode(path))
        if not path.startswith(root + os.sep) or f"{os.sep}__pycache__{os.sep}" in path:
            return
        written.append(path)
        record("write", path=os.path.relpath(path, root), via=via)

    def hook(event, args):
        if busy or event not in ("open", "os.rename", "os.replace"):
            return
        if event == "open":
            path, mode, flags = args
            if isinstance(mode, str):
                writing = any(c in mode for c in "wax+")
            else:
                writing = isinstance(flags, int) and bool(flags & write_flags)
            if writing and isinstance(path, (str, bytes, os.PathLike)):
                wrote(path, "open")
        elif isinstance(args[1], (str, bytes, os.PathLike)):
            source = os.path.realpath(os.fsdecode(args[0])) if isinstance(
                args[0], (str, bytes, os.PathLike)) else None
            if source in saved:
                target = os.path.realpath(os.fsdecode(args[1]))
                saved.add(target)
                classes[target] = classes.get(source, {})
            wrote(args[1], event)

    def patch_save(module):
        original = module.save

        def save(obj, f, *args, **kwargs):
            if isinstance(f, (str, bytes, os.PathLike)):
                real = os.path.realpath(os.fsdecode(f))
                saved.add(real)
                classes[real] = _owners(obj, owners)
                wrote(f, "torch.save")
            return original(obj, f, *args, **kwargs)

        module.save = save

    def patch_optimizer(module):
        def step_hook(optimizer, _args, _kwargs):
            if id(optimizer) not in stepped:
                stepped[id(optimizer)] = [p for g in optimizer.param_groups for p in g["params"]]

        module.register_optimizer_step_post_hook(step_hook)

    def patch_module(module):
        cls = module.Module
        train, state_dict, init = cls.train, cls.state_dict, cls.__init__
        depth = []

        def train_(self, mode=True):
            if not depth:  # the call the script made, not torch's recursion into children
                switched[id(self)] = weakref.ref(self)
            depth.append(1)
            try:
                return train(self, mode)
            finally:
                depth.pop()

        def state_dict_(self, *args, **kwargs):
            out = state_dict(self, *args, **kwargs)
            if not args and not kwargs.get("prefix") and kwargs.get("destination") is None:
                owners.append((out, _class_path(type(self))))  # held: its id stays its own
                del owners[:-16]
            return out

        cls.train, cls.state_dict = train_, state_dict_
        if wanted_classes:
            def init_(self, *args, **kwargs):
                name = _class_path(type(self))
                if name in wanted_classes and len(kept.setdefault(name, [])) < 4:
                    kept[name].append(self)  # alive at exit, where a checkpoint loads into it
                return init(self, *args, **kwargs)

            cls.__init__ = init_

    sys.meta_path.insert(0, _Patcher({"torch.serialization": patch_save,
                                      "torch.optim.optimizer": patch_optimizer,
                                      "torch.nn.modules.module": patch_module}))
    record("start", argv=list(getattr(sys, "argv", [])), cwd=os.getcwd())
    if os.environ.get("RANK") is not None:
        out = os.open(os.path.join(directory, f"stdout-{rank}-{pid}.txt"),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        sys.stdout.flush()
        os.dup2(out, 1)
        os.close(out)
    _capture_script_globals()
    if rank == "0":
        _watch_prints(record, switched)
    atexit.register(_at_exit, record, written, saved, stepped, classes, wanted, kept)
    sys.addaudithook(hook)
    if os.environ.get("TM_VERIFY_SIMULATE"):
        devices = int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("TM_VERIFY_DEVICES") or 1)
        code = os.path.realpath(os.environ.get("TM_VERIFY_CODE_DIR") or root)  # the script's folder
        _simulate().install(int(os.environ.get("LOCAL_RANK", "0")), devices, code, record)


def _simulate():
    """runtime/simulate.py, loaded by path (the runtime package's __init__ is not needed)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_tm_verify_simulate", os.environ["TM_VERIFY_SIMULATE"])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_SCRIPT = {}


def _capture_script_globals():
    """Keep the globals of a script started through ``runpy.run_path`` (``migrate run``'s
    worker): at exit ``__main__`` is the worker again, and a whole-model pickle of a class
    defined in the script needs the script's ``__main__`` to load."""
    import runpy

    original = runpy.run_path

    def run_path(path_name, init_globals=None, run_name=None):
        result = original(path_name, init_globals, run_name)
        if run_name == "__main__":
            _SCRIPT["globals"] = result
        return result

    runpy.run_path = run_path


def _load(torch, path):
    """``torch.load`` with the script's classes reachable as ``__main__`` (see above)."""
    script = _SCRIPT.get("globals")
    if script is None:
        return torch.load(path, map_location="cpu", weights_only=False)
    import types

    main, module = sys.modules.get("__main__"), types.ModuleType("__main__")
    module.__dict__.update(script)
    sys.modules["__main__"] = module
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    finally:
        sys.modules["__main__"] = main


def _signature(obj, prefix="", out=None, depth=0):
    """{dotted key: [shape, sum, dtype]} of the tensors in a (nested) checkpoint object."""
    import torch

    out = {} if out is None else out
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        value = float(t.double().sum()) if t.is_floating_point() or not t.is_complex() else 0.0
        out[prefix or "<tensor>"] = [list(t.shape), value, str(t.dtype).replace("torch.", "")]
    elif isinstance(obj, dict) and depth < 4:
        for k, v in obj.items():
            _signature(v, f"{prefix}.{k}" if prefix else str(k), out, depth + 1)
    elif isinstance(obj, torch.nn.Module) and depth < 4:
        _signature(obj.state_dict(), prefix or "<module>", out, depth + 1)
    elif isinstance(obj, (list, tuple)) and depth < 4:
        for i, v in enumerate(obj):
            _signature(v, f"{prefix}.{i}" if prefix else str(i), out, depth + 1)
    return out


def _class_path(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _owners(obj, owners, prefix="", depth=0, out=None):
    """{dotted key: class} of the state dicts inside a saved object that a module's
    ``state_dict()`` returned (the key "" when the object is one)."""
    out = {} if out is None else out
    for held, name in owners:
        if held is obj:
            out[prefix] = name
            return out
    if isinstance(obj, dict) and depth < 3:
        for k, v in obj.items():
            if isinstance(v, dict):
                _owners(v, owners, f"{prefix}.{k}" if prefix else str(k), depth + 1, out)
    return out


def _at_key(obj, key):
    for part in key.split(".") if key else ():
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part, obj.get(int(part)) if part.isdigit() else None)
    return obj


def _load_into(obj, keys, kept):
    """{dotted key: {"class", "ok", "error"}}: each state dict of ``obj`` loaded with
    ``load_state_dict(strict=True)`` into a live instance of the class the original saved."""
    out = {}
    for key, name in sorted(keys.items()):
        state, modules = _at_key(obj, key), kept.get(name, [])
        if not isinstance(state, dict):
            out[key] = {"class": name, "ok": False, "error": f"{type(state).__name__}, not a state dict"}
            continue
        if not modules:
            out[key] = {"class": name, "ok": None, "error": f"no instance of {name} was made"}
            continue
        error = ""
        for module in modules:
            try:
                module.load_state_dict(state, strict=True)
                error = ""
                break
            except Exception as exc:  # noqa: BLE001 - reported by the parent
                error = error or f"{type(exc).__name__}: {exc}"[:400]
        out[key] = {"class": name, "ok": not error, "error": error}
    return out


_LINES_RECORDED = 200


def _watch_prints(record, switched):
    """Rank 0's printed lines in evaluation mode (every module the script switched with
    ``.train()`` / ``.eval()`` is in eval mode), each with a fingerprint of those modules'
    parameters and buffers: the metrics check compares such lines of the 1-process and the
    N-process run when the fingerprints are equal (the model is identical)."""
    import builtins

    original, state = builtins.print, {"partial": "", "left": _LINES_RECORDED}

    def context():
        modules = [m for m in (ref() for ref in list(switched.values())) if m is not None]
        if not modules or any(getattr(m, "training", True) for m in modules):
            return None
        seen, fingerprint = set(), []
        for m in modules:
            for t in (*m.parameters(), *m.buffers()):
                if id(t) not in seen and t.is_floating_point():
                    seen.add(id(t))
                    fingerprint.append(float(t.detach().double().sum()))
        return fingerprint

    def observe(text):
        if "\n" not in text:
            state["partial"] += text
            return
        *lines, state["partial"] = (state["partial"] + text).split("\n")
        fingerprint = context() if state["left"] > 0 and "torch" in sys.modules else None
        if fingerprint is None:
            return
        for line in lines:
            if state["left"] > 0 and any(c.isdigit() for c in line):
                state["left"] -= 1
                record("line", text=line, fp=fingerprint)

    def print_(*args, sep=" ", end="\n", file=None, flush=False):
        if (file is not None and file is not sys.stdout) or not isinstance(sep, (str, type(None))) \
                or not isinstance(end, (str, type(None))):
            return original(*args, sep=sep, end=end, file=file, flush=flush)
        text = (" " if sep is None else sep).join(map(str, args)) + ("\n" if end is None else end)
        original(text, end="", file=file, flush=flush)
        try:
            observe(text)
        except Exception:  # noqa: BLE001, S110 - a fingerprint that fails costs the check a line, not the run
            pass

    builtins.print = print_


def _paired(rel):
    """``rel`` with the timestamps the parent masks when it pairs files between runs
    (``TM_VERIFY_STAMP``: its pattern) masked."""
    stamp = os.environ.get("TM_VERIFY_STAMP")
    if not stamp:
        return rel
    import re

    return re.sub(stamp, "<TIMESTAMP>", rel)


def _at_exit(record, written, saved, stepped, classes, wanted, kept):
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001, S110 - a closed stdout: nothing left to flush
        pass
    sim = sys.modules.get("_tm_verify_simulate")
    if sim is not None:
        sim.uninstall()
    params = []
    if "torch" in sys.modules:
        import torch

        for plist in stepped.values():
            for p in plist:
                t = p.detach().cpu().double().flatten()
                w = torch.arange(1, t.numel() + 1, dtype=torch.float64).remainder_(97)
                params.append([list(p.shape), float(t.sum()), float((t * w).sum())])
        root = os.path.realpath(os.environ.get("TM_VERIFY_SCRIPT_DIR", os.getcwd()))
        for path in sorted(set(written)):
            if not os.path.isfile(path) or not (path in saved or path.endswith(_CKPT_SUFFIXES)):
                continue
            rel = os.path.relpath(path, root)
            key = _paired(rel)  # the original's checkpoints are keyed with timestamps masked
            try:
                obj = _load(torch, path)
                into = _load_into(obj, wanted[key], kept) if key in wanted else {}
                record("checkpoint", path=rel, ok=True, keys=_signature(obj),
                       modules=classes.get(path, {}), into=into)
            except Exception as exc:  # noqa: BLE001 - reported by the parent
                record("checkpoint", path=rel, ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
    record("params", params=params)
    record("exit")


class _Patcher:
    """Import hook: patch a torch module right after it executes (torch.save opens files in C++,
    which the ``open`` audit event never sees; optimizers register no global hook otherwise)."""

    def __init__(self, patches):
        self.patches = patches

    def find_spec(self, name, path, target=None):
        if name not in self.patches:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                spec.loader = _PatchingLoader(spec.loader, self.patches[name])
                return spec
        return None


class _PatchingLoader:
    def __init__(self, loader, patch):
        self.loader, self.patch = loader, patch

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.patch(module)


if _DIR:
    _install(_DIR)
