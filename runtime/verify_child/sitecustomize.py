"""Bootstrap loaded into every process `migrate verify` starts (as sitecustomize): records the
rank's file writes, stdout, stack on SIGUSR1, stepped parameters and checkpoints at exit.

Active only when ``TM_VERIFY_DIR`` is set; stdlib only until the script imports torch (the
simulated-GPU mode, ``TM_VERIFY_SIMULATE``, imports torch up front). Each worker process (a
process with ``RANK``, or the one process of a 1-process run: ``TM_VERIFY_SINGLE``) writes
``<dir>/audit-<rank>-<pid>.jsonl`` (``start``, ``write``, ``device``, ``placement``,
``checkpoint``, ``params``, ``exit`` records) and ``stack-<rank>-<pid>.txt`` (faulthandler); a
worker of an N-process run has its stdout (fd 1) in ``stdout-<rank>-<pid>.txt``. Launcher
processes only get the stack dump.
"""

import atexit
import faulthandler
import json
import os
import signal
import sys

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
            if isinstance(args[0], (str, bytes, os.PathLike)) and os.path.realpath(
                    os.fsdecode(args[0])) in saved:
                saved.add(os.path.realpath(os.fsdecode(args[1])))
            wrote(args[1], event)

    def patch_save(module):
        original = module.save

        def save(obj, f, *args, **kwargs):
            if isinstance(f, (str, bytes, os.PathLike)):
                saved.add(os.path.realpath(os.fsdecode(f)))
                wrote(f, "torch.save")
            return original(obj, f, *args, **kwargs)

        module.save = save

    def patch_optimizer(module):
        def step_hook(optimizer, _args, _kwargs):
            if id(optimizer) not in stepped:
                stepped[id(optimizer)] = [p for g in optimizer.param_groups for p in g["params"]]

        module.register_optimizer_step_post_hook(step_hook)

    sys.meta_path.insert(0, _Patcher({"torch.serialization": patch_save,
                                      "torch.optim.optimizer": patch_optimizer}))
    record("start", argv=list(getattr(sys, "argv", [])), cwd=os.getcwd())
    if os.environ.get("RANK") is not None:
        out = os.open(os.path.join(directory, f"stdout-{rank}-{pid}.txt"),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        sys.stdout.flush()
        os.dup2(out, 1)
        os.close(out)
    _capture_script_globals()
    atexit.register(_at_exit, record, written, saved, stepped)
    sys.addaudithook(hook)
    if os.environ.get("TM_VERIFY_SIMULATE"):
        devices = int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("TM_VERIFY_DEVICES") or 1)
        _simulate().install(int(os.environ.get("LOCAL_RANK", "0")), devices, root, record)


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
    """{dotted key: [shape, sum]} of the tensors in a (nested) checkpoint object."""
    import torch

    out = {} if out is None else out
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        value = float(t.double().sum()) if t.is_floating_point() or not t.is_complex() else 0.0
        out[prefix or "<tensor>"] = [list(t.shape), value]
    elif isinstance(obj, dict) and depth < 4:
        for k, v in obj.items():
            _signature(v, f"{prefix}.{k}" if prefix else str(k), out, depth + 1)
    elif isinstance(obj, torch.nn.Module) and depth < 4:
        _signature(obj.state_dict(), prefix or "<module>", out, depth + 1)
    elif isinstance(obj, (list, tuple)) and depth < 4:
        for i, v in enumerate(obj):
            _signature(v, f"{prefix}.{i}" if prefix else str(i), out, depth + 1)
    return out


def _at_exit(record, written, saved, stepped):
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
            try:
                obj = _load(torch, path)
                record("checkpoint", path=rel, ok=True, keys=_signature(obj))
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
