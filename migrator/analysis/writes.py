"""What writes a file: one answer for the wrapper form's rank-0 writes (MIG406) and the module
form's hooks, so that a writer added here is guarded in both."""

from __future__ import annotations

import libcst as cst

from migrator.anchors_spec import WRITE_MODE

# Library writers by qualified name; checkpoints (``torch.save``) are the checkpoint rules'.
FILE_WRITERS = frozenset({
    "torchvision.utils.save_image",
    "matplotlib.pyplot.savefig",
    "matplotlib.pyplot.imsave",
    "torch.onnx.export",
    "numpy.save",
    "numpy.savetxt",
    "numpy.savez",
    "numpy.savez_compressed",
})
CHECKPOINT_WRITERS = frozenset({"torch.save"})
# Methods of objects the analysis cannot name (a figure, a DataFrame) that write a file.
WRITER_METHODS = frozenset({"savefig", "to_csv", "to_json", "to_parquet", "write_text", "write_bytes"})


def opens_for_write(ix, call: cst.Call) -> bool:
    """``open(path, "w")`` (any write, append or exclusive mode); a mode that is not a literal
    or a plain ``open(path)`` is a read."""
    if ix.call_qname(call) != "builtins.open":
        return False
    mode = next((a for a in call.args if a.keyword is not None and a.keyword.value == "mode"), None)
    if mode is None:
        positional = [a for a in call.args if a.keyword is None and not a.star]
        mode = positional[1] if len(positional) > 1 else None
    if mode is None or not isinstance(mode.value, cst.SimpleString):
        return False
    value = mode.value.evaluated_value
    return isinstance(value, str) and WRITE_MODE.fullmatch(value) is not None


def writes_file(ix, call: cst.Call, checkpoints: bool = False, opens: bool = True) -> bool:
    """``call`` writes a file itself (not through a ``with open`` handle): a library writer,
    a writer method of an unnamed object, with ``opens`` ``open`` for writing, and with
    ``checkpoints`` ``torch.save`` too."""
    q = ix.call_qname(call)
    if q in FILE_WRITERS or (checkpoints and q in CHECKPOINT_WRITERS):
        return True
    func = call.func
    if q is None and isinstance(func, cst.Attribute) and func.attr.value in WRITER_METHODS:
        return True
    return opens and opens_for_write(ix, call)
