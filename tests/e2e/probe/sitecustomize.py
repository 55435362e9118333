"""Test probe loaded into every e2e child process: records which rank writes which file, silences rank>0 stdout into a file.

Active only when ``E2E_PROBE_DIR`` is set. The rank comes from the launcher's environment
(``RANK`` for torchrun / ``fabric run`` / ``runtime.launch`` workers); a process without one
(a launcher agent, or a plain single-process run) is recorded as rank ``-``. Each process writes
``<dir>/<pid>.jsonl``: a ``start`` record, one ``write`` record per file opened for writing or
renamed into place, and an ``exit`` record. A worker with rank > 0 gets its stdout redirected to
``<dir>/stdout-rank<rank>-<pid>.txt`` so the test can see exactly what that rank printed.
"""

import atexit
import json
import os
import sys

_DIR = os.environ.get("E2E_PROBE_DIR")


def _install(probe_dir):
    rank = os.environ.get("RANK", "-")
    pid = os.getpid()
    log = open(os.path.join(probe_dir, f"{pid}.jsonl"), "a", buffering=1)  # noqa: SIM115 - open for the whole process
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    busy = []

    def record(kind, **fields):
        busy.append(1)
        try:
            log.write(json.dumps(dict(kind=kind, rank=rank, pid=pid, **fields)) + "\n")
        finally:
            busy.pop()

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
                record("write", path=os.path.abspath(os.fsdecode(path)))
        else:
            record("write", path=os.path.abspath(os.fsdecode(args[1])), via=event)

    sys.meta_path.insert(0, _PatchTorchSave(record))
    record("start", argv=list(getattr(sys, "argv", [])), cwd=os.getcwd())
    if rank not in ("-", "0"):
        sys.stdout = open(os.path.join(probe_dir, f"stdout-rank{rank}-{pid}.txt"), "w", buffering=1)  # noqa: SIM115
    atexit.register(lambda: record("exit", argv=list(sys.argv)))
    sys.addaudithook(hook)


class _PatchTorchSave:
    """Import hook: wrap ``torch.serialization.save`` (torch's zip writer opens paths in C++,
    which the ``open`` audit event never sees) before ``torch/__init__`` re-exports it."""

    def __init__(self, record):
        self.record = record

    def find_spec(self, name, path, target=None):
        if name != "torch.serialization":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                spec.loader = _PatchingLoader(spec.loader, self.record)
                return spec
        return None


class _PatchingLoader:
    def __init__(self, loader, record):
        self.loader, self.record = loader, record

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        original, record = module.save, self.record

        def save(obj, f, *args, **kwargs):
            if isinstance(f, (str, bytes, os.PathLike)):
                record("write", path=os.path.abspath(os.fsdecode(f)), via="torch.save")
            return original(obj, f, *args, **kwargs)

        module.save = save


if _DIR:
    _install(_DIR)
