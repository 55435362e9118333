"""Simulated CUDA for `migrate verify --simulate-gpus`: each process believes it owns N GPUs while
every tensor stays on the CPU, and every logical device use is recorded with the user's call site.

Loaded by the verify bootstrap in each child process before the script runs (``install``). What
it does (torch-side, works with a CPU-only torch):

- ``torch.cuda.is_available`` is True, ``device_count`` is N, ``current_device``/``set_device``
  follow the process's own state (``set_device`` is recorded);
- a ``TorchFunctionMode`` rewrites ``device=cuda...`` of factories and ``Tensor.to``/``.cuda`` to
  the CPU and tags the result with its logical device (a tensor attribute); the tag follows
  through ops, so an op that mixes ``cuda:i`` and ``cuda:j`` (or a CPU tensor of dim > 0 and a
  CUDA one) is seen; ``.numpy()`` of a logically-CUDA tensor is a violation;
- ``nn.Module.to``/``.cuda`` move nothing and tag parameters and buffers;
- ``init_process_group`` is forced to gloo, DDP ``device_ids``/``output_device`` are recorded and
  dropped, ``DataLoader(pin_memory=True)`` and ``torch.load(map_location=cuda)`` stay on the CPU.

A violation is any use by local rank k of a CUDA index other than k ("cuda"/0 resolve to the
current device, which is 0 until ``set_device``), a mixing op, or ``.numpy()`` of a CUDA tensor.
Blind spots are listed in docs/verify.md.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import weakref

import torch
from torch.overrides import TorchFunctionMode

# id(tensor) -> (weak reference, logical device). Not a tensor attribute: torch.save pickles a
# tensor's __dict__, and a tag saved by rank 0 would come back on rank 1 with the checkpoint.
_TAGS: dict[int, tuple[weakref.ref, str]] = {}
_HERE = os.path.abspath(__file__)
# Ops whose CUDA forms accept CPU (or mixed) tensor arguments: never a mixing violation.
_MIXING_OK = {
    "to", "cuda", "cpu", "copy_", "__getitem__", "__setitem__", "__set__", "__get__", "type",
    "index_put_", "new_tensor", "set_", "__repr__", "__format__", "__str__", "is_pinned",
    "pin_memory", "detach", "requires_grad_", "__eq__", "__ne__",
    # a type query (Module._apply asks it of each parameter and its moved copy): dense CPU and
    # CUDA tensors are compatible on a GPU too, so `param.data = moved` keeps the Parameter
    "_has_compatible_shallow_copy_type",
}


class _State:
    def __init__(self, local_rank: int, devices: int, script_dir: str, record) -> None:
        self.local_rank, self.devices, self.record = local_rank, devices, record
        self.script_dir = os.path.realpath(script_dir) + os.sep
        self.current = 0
        self.seen: set[tuple] = set()
        self.violations = 0
        self.local = threading.local()


_state: _State | None = None
_mode: TorchFunctionMode | None = None


def call_site() -> str:
    """``file:line`` of the first frame in the script's folder, else the first frame outside torch."""
    frame, fallback = sys._getframe(2), ""
    while frame is not None:
        name = os.path.realpath(frame.f_code.co_filename)
        if _state is not None and name.startswith(_state.script_dir):
            return f"{os.path.relpath(name, _state.script_dir.rstrip(os.sep))}:{frame.f_lineno}"
        if not fallback and name != _HERE and f"{os.sep}torch{os.sep}" not in name:
            fallback = f"{name}:{frame.f_lineno}"
        frame = frame.f_back
    return fallback or "<unknown>"


def _violation(message: str) -> None:
    assert _state is not None
    site = call_site()
    key = ("violation", message, site)
    if key in _state.seen:
        return
    _state.seen.add(key)
    _state.violations += 1
    _state.record("placement", ok=False, message=message, site=site)


def _use(index: int, what: str) -> str:
    """Record that ``what`` uses logical ``cuda:index``; a violation when it is not this rank's."""
    assert _state is not None
    site = call_site()
    key = ("use", index, what, site)
    if key not in _state.seen:
        _state.seen.add(key)
        _state.record("device", device=f"cuda:{index}", what=what, site=site)
    if index != _state.local_rank:
        _violation(f"local rank {_state.local_rank} uses cuda:{index} ({what}); "
                   f"its device is cuda:{_state.local_rank}")
    return f"cuda:{index}"


def cuda_index(device) -> int | None:
    """The CUDA index ``device`` names (None for a non-CUDA device); bare "cuda" is the current one."""
    if device is None:
        return None
    if isinstance(device, int) and not isinstance(device, bool):
        return device
    if isinstance(device, str):
        if not device.startswith("cuda"):
            return None
        device = torch.device(device)
    if isinstance(device, torch.device):
        if device.type != "cuda":
            return None
        assert _state is not None
        return _state.current if device.index is None else device.index
    return None


def logical(t) -> str | None:
    """The logical device of tensor ``t`` ("cpu", "cuda:k"), None when unknown (made by C++)."""
    if not isinstance(t, torch.Tensor):
        return None
    entry = _TAGS.get(id(t))
    return entry[1] if entry is not None and entry[0]() is t else None


def _forget(ref: weakref.ref, key: int) -> None:
    entry = _TAGS.get(key)
    if entry is not None and entry[0] is ref:
        del _TAGS[key]


def _tag(obj, dev: str | None) -> None:
    if dev is None:
        return
    if isinstance(obj, torch.Tensor):
        try:
            key = id(obj)
            entry = _TAGS.get(key)
            if entry is not None and entry[0]() is obj:
                _TAGS[key] = (entry[0], dev)
            else:
                _TAGS[key] = (weakref.ref(obj, lambda r, k=key: _forget(r, k)), dev)
        except (AttributeError, RuntimeError, TypeError):
            pass
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            if isinstance(o, torch.Tensor):
                _tag(o, dev)


def _tensors(args, kwargs):
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, torch.Tensor):
                    yield b


def _to_device_arg(args, kwargs):
    """Where the device sits in a ``Tensor.to`` call: (position or key, value)."""
    if "device" in kwargs:
        return "device", kwargs["device"]
    if len(args) > 1 and isinstance(args[1], (str, torch.device, int)) and not isinstance(args[1], bool):
        return 1, args[1]
    return None, None


def _from_user_code() -> bool:
    """Whether the innermost Python frame outside this file is in the script's folder."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return (frame is not None and _state is not None
            and os.path.realpath(frame.f_code.co_filename).startswith(_state.script_dir))


_DEVICE_GET = torch._C.TensorBase.device.__get__
_IS_CUDA_GET = torch._C.TensorBase.is_cuda.__get__
_GET_DEVICE = torch.Tensor.get_device


def _user_cuda_index(t) -> int | None:
    """The logical CUDA index of ``t`` when the script's own code asks, else None."""
    d = logical(t) if _state is not None else None
    if d and d.startswith("cuda") and _from_user_code():
        return int(d.split(":")[1])
    return None


def _patch_tensor_properties() -> None:
    """``x.device`` / ``x.is_cuda`` (not routed through torch-function modes) tell the script's
    own code the logical device, so ``device=x.device`` follows x; torch and libraries keep
    seeing the CPU tensor they really hold."""

    def device(self):
        index = _user_cuda_index(self)
        return _DEVICE_GET(self) if index is None else torch.device("cuda", index)

    def is_cuda(self):
        return _IS_CUDA_GET(self) or _user_cuda_index(self) is not None

    torch.Tensor.device = property(device)
    torch.Tensor.is_cuda = property(is_cuda)


class SimulatedCudaMode(TorchFunctionMode):
    """Strips CUDA devices to the CPU, tags tensors with their logical device, flags misuse."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is _GET_DEVICE:
            index = _user_cuda_index(args[0])
            return func(*args, **kwargs) if index is None else index
        name = getattr(func, "__name__", "")
        if name == "type" and len(args) > 1 and isinstance(args[1], type) and hasattr(args[1], "_tm_dtype"):
            return self._moved(args[0], args[0].to(args[1]._tm_dtype), _use(args[1]._tm_index(), "Tensor.type"))
        dev, unknown = None, False
        if name == "numpy" or name == "__array__":
            d = logical(args[0]) if args else None
            if d and d.startswith("cuda"):
                _violation(f".numpy() of a tensor on {d} (move it to the CPU first)")
        elif name == "pin_memory":
            return args[0]
        if name == "cuda" and args and isinstance(args[0], torch.Tensor):
            d = args[1] if len(args) > 1 else kwargs.get("device")
            assert _state is not None
            idx = _state.current if d is None else cuda_index(
                torch.device("cuda", d) if isinstance(d, int) else d)
            return self._moved(args[0], args[0], _use(idx, "Tensor.cuda"))
        if name == "to" and args and isinstance(args[0], torch.Tensor):
            where, value = _to_device_arg(args, kwargs)
            if isinstance(value, torch.Tensor):
                dev = logical(value)
            elif where is not None:
                idx = cuda_index(value)
                if idx is not None:
                    dev = _use(idx, "Tensor.to")
                    if where == "device":
                        kwargs["device"] = "cpu"
                    else:
                        args = (args[0], "cpu", *args[2:])
                else:
                    dev = "cpu"
            out = func(*args, **kwargs)
            return self._moved(args[0], out, dev) if dev else out
        if name == "__set__" and getattr(func, "__self__", None) is torch.Tensor.data and len(args) == 2:
            # ``t.data = u`` (Module.cpu()/.to() keep each Parameter so): t is now where u is
            func(*args, **kwargs)
            if logical(args[1]) is not None:
                _tag(args[0], logical(args[1]))
            return None
        if name == "cpu" and args and isinstance(args[0], torch.Tensor):
            out = func(*args, **kwargs)
            if logical(args[0]) not in (None, "cpu") and out is args[0]:
                out = args[0].clone()
            _tag(out, "cpu")
            return out
        if "device" in kwargs:
            idx = cuda_index(kwargs["device"])
            if idx is not None:
                dev = _use(idx, f"{name}(device=...)")
                kwargs["device"] = "cpu"
            elif _from_user_code():
                dev = "cpu"
            else:
                # torch's own code asks ``device=x.device`` of a tensor it really holds on the
                # CPU (nn.LSTM's zero state): the logical device is unknown there, not the CPU
                unknown = True
        devices = {d for d in (logical(t) for t in _tensors(args, kwargs)) if d}
        if len(devices) > 1 and name not in _MIXING_OK:
            cuda = sorted(d for d in devices if d.startswith("cuda"))
            if len(cuda) > 1:
                _violation(f"{name} mixes tensors on {' and '.join(cuda)}")
            elif cuda and any(logical(t) == "cpu" and t.dim() > 0 for t in _tensors(args, kwargs)):
                _violation(f"{name} mixes a CPU tensor and a tensor on {cuda[0]} "
                           "(move the CPU tensor to the device)")
        out = func(*args, **kwargs)
        if unknown and not devices:
            return out
        if dev is None and devices:
            cuda = sorted(d for d in devices if d.startswith("cuda"))
            dev = cuda[0] if cuda else "cpu"
        elif dev is None and name in _FACTORIES:
            dev = "cpu"
        if dev is not None:
            _tag(out, dev)
        return out

    @staticmethod
    def _moved(src, out, dev):
        if out is src and logical(src) != dev:
            out = src.clone()  # a real move copies: the source keeps its own device
        _tag(out, dev)
        return out


_FACTORIES = {
    "tensor", "zeros", "ones", "empty", "full", "rand", "randn", "randint", "randperm", "arange",
    "linspace", "eye", "as_tensor", "from_numpy", "zeros_like", "ones_like", "empty_like",
    "rand_like", "randn_like", "full_like", "load",
}


class _FakeStream:
    """Stands for ``torch.cuda.Stream``/``Event``: every method does nothing (no CUDA work)."""

    def __init__(self, *args, **kwargs) -> None:
        self.device = torch.device("cpu")

    def __getattr__(self, name):
        return lambda *a, **k: None if name != "query" else True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def _legacy_type(name: str, dtype: torch.dtype) -> type:
    """``torch.cuda.FloatTensor`` & co: make a CPU tensor tagged with the current device."""

    def new(cls, *args, **kwargs):
        if args and isinstance(args[0], (list, tuple, int, float)) and not all(isinstance(a, int) for a in args):
            t = torch.tensor(args[0], dtype=dtype)
        elif args and isinstance(args[0], torch.Tensor):
            t = args[0].to(dtype)
        else:
            t = torch.empty(*args, dtype=dtype)
        _tag(t, _use(cls._tm_index(), f"torch.cuda.{name}"))
        return t

    def index(cls=None) -> int:
        assert _state is not None
        return _state.current

    return type(name, (), {"__new__": new, "_tm_dtype": dtype, "_tm_index": staticmethod(index)})


_LEGACY = {"FloatTensor": torch.float32, "DoubleTensor": torch.float64, "HalfTensor": torch.float16,
           "BFloat16Tensor": torch.bfloat16, "LongTensor": torch.int64, "IntTensor": torch.int32,
           "ShortTensor": torch.int16, "CharTensor": torch.int8, "ByteTensor": torch.uint8,
           "BoolTensor": torch.bool}


class _Properties:
    name, major, minor = "Simulated GPU (torch-migrate verify)", 8, 0
    total_memory, multi_processor_count, is_integrated = 80 * 2**30, 108, False


def _patch_cuda(state: _State) -> None:
    cuda = torch.cuda
    for legacy, dtype in _LEGACY.items():
        setattr(cuda, legacy, _legacy_type(legacy, dtype))
    cuda.Stream = cuda.Event = _FakeStream
    cuda.stream = lambda s=None: _FakeStream()
    cuda.current_stream = cuda.default_stream = lambda *a, **k: _FakeStream()

    def set_device(device) -> None:
        idx = device if isinstance(device, int) else cuda_index(device)
        if idx is None:
            return
        _use(idx, "torch.cuda.set_device")
        state.current = idx

    cuda.is_available = lambda: True
    cuda.device_count = lambda: state.devices
    cuda.current_device = lambda: state.current
    cuda.set_device = set_device
    cuda.is_initialized = lambda: True
    cuda._lazy_init = lambda: None
    for name in ("synchronize", "empty_cache", "reset_peak_memory_stats", "ipc_collect",
                 "manual_seed", "manual_seed_all", "seed", "seed_all", "init"):
        setattr(cuda, name, lambda *a, **k: None)
    for name in ("memory_allocated", "max_memory_allocated", "memory_reserved",
                 "max_memory_reserved"):
        setattr(cuda, name, lambda *a, **k: 0)
    cuda.get_device_name = lambda *a, **k: "Simulated GPU (torch-migrate verify)"
    cuda.get_device_capability = lambda *a, **k: (8, 0)
    cuda.is_bf16_supported = lambda *a, **k: True
    cuda.get_device_properties = lambda *a, **k: _Properties()
    cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()
    cuda.set_rng_state = lambda *a, **k: None
    cuda.get_rng_state_all = lambda: [torch.get_rng_state() for _ in range(state.devices)]
    cuda.set_rng_state_all = lambda *a, **k: None
    torch.backends.cudnn.is_available = lambda: True
    accel = getattr(torch, "accelerator", None)  # torch >= 2.6: what Accelerate asks first
    if accel is not None:
        accel.current_accelerator = lambda *a, **k: torch.device("cuda")  # no index, as torch says
        accel.is_available = lambda: True
        accel.device_count = lambda: state.devices
        accel.current_device_index = accel.current_device_idx = lambda: state.current
        accel.set_device_index = accel.set_device_idx = set_device
        accel.synchronize = lambda *a, **k: None
        accel.current_stream = lambda *a, **k: _FakeStream()  # is_capturing() -> None: falsy


def _patch_modules() -> None:
    nn = torch.nn
    module_to = nn.Module.to

    def tag_module(module, dev):
        for t in (*module.parameters(), *module.buffers()):
            _tag(t, dev)

    def to(self, *args, **kwargs):
        # an int is a CUDA index (``model.to(gpu_id)``); torch would ask the missing accelerator
        if args and isinstance(args[0], int) and not isinstance(args[0], bool):
            args = (torch.device("cuda", args[0]), *args[1:])
        if isinstance(kwargs.get("device"), int) and not isinstance(kwargs["device"], bool):
            kwargs["device"] = torch.device("cuda", kwargs["device"])
        device, dtype, non_blocking, _fmt = torch._C._nn._parse_to(*args, **kwargs)
        idx = cuda_index(device)
        if idx is None:
            out = module_to(self, *args, **kwargs)
            if device is not None:
                tag_module(self, "cpu")
            return out
        dev = _use(idx, "Module.to")
        out = module_to(self, device="cpu", dtype=dtype, non_blocking=non_blocking) \
            if dtype is not None else self
        tag_module(self, dev)
        return out

    def cuda(self, device=None):
        idx = cuda_index(torch.device("cuda") if device is None else
                         (torch.device("cuda", device) if isinstance(device, int) else device))
        tag_module(self, _use(idx, "Module.cuda"))
        return self

    nn.Module.to, nn.Module.cuda = to, cuda

    ddp = nn.parallel.DistributedDataParallel
    ddp_init = ddp.__init__

    def ddp_init_sim(self, module, device_ids=None, output_device=None, *args, **kwargs):
        for d in device_ids or ():
            idx = cuda_index(d)
            if idx is not None:
                _use(idx, "DistributedDataParallel(device_ids=...)")
        if output_device is not None and cuda_index(output_device) is not None:
            _use(cuda_index(output_device), "DistributedDataParallel(output_device=...)")
        ddp_init(self, module, None, None, *args, **kwargs)

    ddp.__init__ = ddp_init_sim

    def data_parallel_init(self, module, device_ids=None, output_device=None, dim=0):
        # Runs the module as it is (one CPU "replica"); every device it would use is recorded.
        nn.Module.__init__(self)
        assert _state is not None
        ids = range(_state.devices) if device_ids is None else device_ids
        for d in ids:
            _use(cuda_index(torch.device("cuda", d) if isinstance(d, int) else d),
                 "DataParallel(device_ids=...)")
        self.module, self.device_ids, self.dim, self.output_device = module, [], dim, None
        self.src_device_obj = torch.device("cpu")

    nn.DataParallel.__init__ = data_parallel_init


def _patch_dist_and_data() -> None:
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d
    from torch.utils.data import DataLoader

    original = c10d.init_process_group

    def init_process_group(backend=None, *args, **kwargs):
        kwargs.pop("device_id", None)
        return original("gloo", *args, **kwargs)

    dist.init_process_group = c10d.init_process_group = init_process_group

    loader_init = DataLoader.__init__

    # wraps: the patched __init__ keeps DataLoader's signature. Code that rebuilds a loader from
    # its attributes reads that signature (Lightning Fabric's setup_dataloaders, when it injects
    # a DistributedSampler): a bare (*args, **kwargs) made it drop batch_size, shuffle, ...
    @functools.wraps(loader_init)
    def dataloader_init(self, *args, **kwargs):
        kwargs["pin_memory"] = False
        kwargs.pop("pin_memory_device", None)
        loader_init(self, *args, **kwargs)

    DataLoader.__init__ = dataloader_init

    load, save = torch.load, torch.save

    def safe_load(f, map_location=None, *args, **kwargs):
        idx = cuda_index(map_location) if isinstance(map_location, (str, torch.device, int)) else None
        if idx is not None:
            _use(idx, "torch.load(map_location=...)")
            map_location = "cpu"
        elif callable(map_location) and not isinstance(map_location, dict):
            map_location = "cpu"
        # None or a dict: each storage is restored where it was saved (as mapped): _restored
        _FILES.loaded = {}
        try:
            out = load(f, map_location, *args, **kwargs)
            _tag_loaded(out, _FILES.loaded, 6)
        finally:
            _FILES.loaded = None
        return out

    def located_save(obj, f, *args, **kwargs):
        where = {}
        for ref, dev in list(_TAGS.values()):
            t = ref()
            if t is not None and dev.startswith("cuda"):
                try:
                    where[t.untyped_storage().data_ptr()] = dev
                except (RuntimeError, TypeError):
                    pass
        _FILES.saving = where
        try:
            return save(obj, f, *args, **kwargs)
        finally:
            _FILES.saving = None

    torch.load, torch.save = safe_load, located_save
    # Storages of tensors on a simulated GPU are written with that GPU as their location (as
    # torch does on real GPUs), and read back onto it: `torch.load(f)` of a file rank 0 wrote
    # from cuda:0 lands on cuda:0 on every rank, a violation on the others.
    torch.serialization.register_package(1, _saved_location, _restored)


_FILES = threading.local()  # .saving: storage data_ptr -> GPU; .loaded: restored storages


def _saved_location(storage) -> str | None:
    where = getattr(_FILES, "saving", None)
    return where.get(storage.data_ptr()) if where else None


def _restored(storage, location):
    location = str(location)
    if not location.startswith("cuda"):
        return None
    dev = _use(cuda_index(location), "torch.load: restored on the GPU it was saved from")
    loaded = getattr(_FILES, "loaded", None)
    if loaded is not None:
        loaded[storage.data_ptr()] = dev
    return storage  # stays on the CPU; the tensors made from it are tagged after the load


def _tag_loaded(obj, loaded: dict, depth: int) -> None:
    """Tag the tensors ``torch.load`` returned whose storage it restored onto a GPU."""
    if not loaded or depth < 0:
        return
    if isinstance(obj, torch.Tensor):
        try:
            dev = loaded.get(obj.untyped_storage().data_ptr())
        except (RuntimeError, TypeError):
            dev = None
        _tag(obj, dev)
    elif isinstance(obj, torch.nn.Module):
        for t in (*obj.parameters(), *obj.buffers()):
            _tag_loaded(t, loaded, 0)
    elif isinstance(obj, dict):
        for v in obj.values():
            _tag_loaded(v, loaded, depth - 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _tag_loaded(v, loaded, depth - 1)


def install(local_rank: int, devices: int, script_dir: str, record) -> None:
    """Make this process see ``devices`` simulated GPUs, as local rank ``local_rank``."""
    global _state, _mode
    if _state is not None:
        return
    _state = _State(local_rank, devices, script_dir, record)
    _patch_cuda(_state)
    _patch_modules()
    _patch_dist_and_data()
    _patch_tensor_properties()
    _mode = SimulatedCudaMode()
    _mode.__enter__()


def install_queries(devices: int) -> None:
    """Only the ``torch.cuda`` queries (for a launcher process that counts GPUs, runs no script)."""
    _patch_cuda(_State(0, devices, os.getcwd(), lambda *a, **k: None))


def uninstall() -> None:
    """Leave the mode (at exit, before the bootstrap reads parameters and checkpoints)."""
    global _mode
    if _mode is not None:
        try:
            _mode.__exit__(None, None, None)
        except Exception:  # noqa: BLE001, S110 - another mode on top: leave it, nothing to undo
            pass
        _mode = None
