"""Print the structure of each checkpoint named on the command line as JSON (run inside a run's folder).

Usage: python ckpt_sig.py FILE...  ->  {"FILE": structure-or-"error: ..."}. A structure keeps
dict keys, tensor dtypes and shapes and module class names, never values, so a checkpoint written
by a port on 2 processes can be compared with the one written on 1 process (prefixes such as
``module.`` or a wrapper pickled instead of the model show up as differences).
"""

import json
import sys

import torch


def structure(obj):
    if isinstance(obj, torch.Tensor):
        return ["tensor", str(obj.dtype), list(obj.shape)]
    if isinstance(obj, torch.nn.Module):
        return {"module": type(obj).__qualname__, "state": structure(obj.state_dict())}
    if isinstance(obj, dict):
        return {str(k): structure(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [structure(v) for v in obj]
    if isinstance(obj, (int, float, str, bool)) or obj is None:
        return type(obj).__name__
    return type(obj).__qualname__


def main(paths):
    out = {}
    for path in paths:
        try:
            out[path] = structure(torch.load(path, map_location="cpu", weights_only=False))
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            out[path] = f"error: {type(exc).__name__}: {exc}"[:300]
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
