"""Read a ``torch.save`` zip archive made by Ultralytics without executing any of its code.

A ``.pt`` file is a zip holding ``<name>/data.pkl`` (a pickle) and ``<name>/data/<key>`` (raw tensor
bytes). Ordinary unpickling would import ``ultralytics`` and run whatever callables the pickle
names; a hostile file can name ``os.system``. Here every global the pickle asks for goes through an
allow-list:

* module classes from ``ultralytics.*`` and ``torch.nn.modules.*`` become inert :class:`StandIn`
  objects that only record their attributes (``_modules``, ``_parameters``, ``yaml``, ``names`` …);
* tensors are rebuilt by our own functions from the raw bytes;
* a handful of harmless builtins (OrderedDict, set, dtypes, paths as strings, numpy scalars);
* anything else raises :class:`UnsafeCheckpointError` before it can be called.

Every problem with a file (empty, truncated, corrupt, refused) is a :class:`ConversionError`
with a one-line message that names the file.
"""
from __future__ import annotations

import codecs
import collections
import io
import pickle
import re
import zipfile
import zlib
from pathlib import Path, PurePath

import numpy as np
import torch


class ConversionError(ValueError):
    """A file yolofreeze cannot turn into a model: unreadable, truncated, refused, or a different network.

    The message is one line and names the file.
    """


class UnsafeCheckpointError(ConversionError, pickle.UnpicklingError):
    """The checkpoint names a global outside the allow-list; nothing from it was executed."""


class StandIn:
    """Inert replacement for a pickled class: accepts any constructor arguments and stores its state."""

    def __init__(self, *args, **kwargs):
        pass  # constructor arguments of a pickled object are ignored: nothing here may act on them

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<stand-in {type(self).__module__}.{type(self).__qualname__}>"


_STANDIN_CLASSES: dict[tuple[str, str], type] = {}
STANDIN_MODULES = re.compile(r"^(ultralytics(\.[A-Za-z_]\w*)*|torch\.nn\.modules(\.[A-Za-z_]\w*)*)$")
IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")

STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
DTYPES = {name: getattr(torch, name) for name in
          ("float16", "float32", "float64", "bfloat16", "half", "float", "double", "int64", "int32", "int16",
           "int8", "uint8", "bool", "long", "int")}


def standin_class(module: str, name: str) -> type:
    """The (cached) inert class standing for ``module.name``."""
    key = (module, name)
    if key not in _STANDIN_CLASSES:
        _STANDIN_CLASSES[key] = type(name, (StandIn,), {"__module__": module, "__qualname__": name})
    return _STANDIN_CLASSES[key]


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, requires_grad=False, hooks=None, meta=None):
    """``torch._utils._rebuild_tensor_v2`` replacement: a strided view of the flat storage tensor."""
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    """``_rebuild_parameter`` replacement: parameters become plain tensors."""
    return data


def _rebuild_from_type(func, new_type, args, state):
    """``_rebuild_from_type_v2`` replacement: ``func`` is already an allow-listed rebuild function."""
    if func not in (_rebuild_tensor, _rebuild_parameter):
        raise UnsafeCheckpointError(f"refusing tensor rebuild through {func!r}")
    return func(*args)


def _as_str_path(*parts) -> str:
    return str(PurePath(*parts))


def _numpy_scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar`` replacement for plain numeric dtypes only."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, bytes):
        raise UnsafeCheckpointError(f"refusing numpy scalar of dtype {dtype!r}")
    return np.frombuffer(data, dtype=dtype)[0].item()


def _numpy_dtype(spec, align=False, copy=False):
    if not isinstance(spec, str) or not re.match(r"^[<>|=]?[biufc]\d+$", spec):
        raise UnsafeCheckpointError(f"refusing numpy dtype {spec!r}")
    return np.dtype(spec)


def _codecs_encode(text, encoding="latin1"):
    """Protocol-2 pickles store ``bytes`` as ``_codecs.encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafeCheckpointError("refusing _codecs.encode with unexpected arguments")
    return text.encode("latin1")


def _torch_device(*args):
    return ":".join(str(a) for a in args)


ALLOWED_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch.nn.parameter", "Parameter"): standin_class("torch.nn.parameter", "Parameter"),
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "tuple"): tuple,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("_codecs", "encode"): _codecs_encode,
    ("torch", "device"): _torch_device,
    ("torch", "Size"): tuple,
    ("pathlib", "PosixPath"): _as_str_path,
    ("pathlib", "WindowsPath"): _as_str_path,
    ("pathlib", "Path"): _as_str_path,
    ("pathlib", "PurePosixPath"): _as_str_path,
    ("pathlib", "PureWindowsPath"): _as_str_path,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("types", "SimpleNamespace"): standin_class("types", "SimpleNamespace"),
    ("argparse", "Namespace"): standin_class("argparse", "Namespace"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals only through the allow-list and reads tensor bytes from the zip."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: str):
        super().__init__(file)
        self.archive, self.prefix, self.source = archive, prefix, source

    def find_class(self, module: str, name: str):
        module = {"__builtin__": "builtins"}.get(module, module)  # protocol-2 pickles use Python 2 names
        if (module, name) in ALLOWED_FUNCTIONS:
            return ALLOWED_FUNCTIONS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        if module == "torch" and name in DTYPES:
            return DTYPES[name]
        if STANDIN_MODULES.match(module) and IDENTIFIER.match(name):
            return standin_class(module, name)
        raise UnsafeCheckpointError(
            f"{self.source}: refused: its pickle asks for '{module}.{name}', which is not on yolofreeze's "
            f"allow-list of Ultralytics/torch model classes; nothing from this file was executed (if this is a "
            f"genuine checkpoint, please report that name)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"{self.source}: unexpected persistent id {pid!r}")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype) or not IDENTIFIER.match(f"k{key}"):
            raise UnsafeCheckpointError(f"{self.source}: bad storage record {pid!r}")
        raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        if flat.numel() != numel:
            raise ConversionError(f"{self.source}: storage {key} holds {flat.numel()} values, expected {numel}")
        return flat


ZIP_MAGIC = b"PK\x03\x04"
# what decoding damaged bytes can raise, from zip, zlib, pickle and our rebuild functions
DECODE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, KeyError, IndexError, TypeError, ValueError,
                 AttributeError, RuntimeError, OverflowError, pickle.UnpicklingError)


def archive_problem(path: Path) -> str | None:
    """Why the existing file ``path`` is not a torch zip archive, in a few words; None when it is one."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    if zipfile.is_zipfile(path):
        return None
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(ZIP_MAGIC):
        return (f"truncated or damaged zip archive ({size:,} bytes, its central directory is missing): "
                f"an interrupted download or copy?")
    if head.startswith(b"\x80"):
        return "a legacy (PyTorch < 1.6) pickle file, which is not supported: re-save it with a newer torch.save"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head)  # tolerates a character cut at the 512th byte
    except UnicodeDecodeError:
        return "not a PyTorch checkpoint (not a zip archive)"
    return "a text file, not a PyTorch checkpoint"


def safe_load(path: str | Path):
    """Unpickle a ``torch.save`` zip archive through the allow-list.

    Returns the pickled object with module instances replaced by :class:`StandIn` objects and all
    tensors as plain CPU tensors in their stored dtype. Raises :class:`UnsafeCheckpointError`
    for any global outside the allow-list, :class:`ConversionError` for files that are not
    (complete) torch zip archives, ``FileNotFoundError`` when there is no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    problem = archive_problem(path)
    if problem:
        raise ConversionError(f"{path}: {problem}")
    try:
        with zipfile.ZipFile(path) as archive:
            return _unpickle_archive(archive, path)
    except ConversionError:
        raise
    except DECODE_ERRORS as err:
        raise ConversionError(f"{path}: damaged checkpoint ({type(err).__name__}: {first_line(err)})") from err


def _unpickle_archive(archive: zipfile.ZipFile, path: Path):
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ConversionError(f"{path}: expected one '<name>/data.pkl' in the archive, found {pickles}")
    prefix = pickles[0][: -len("data.pkl")]
    if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
        raise ConversionError(f"{path}: big-endian checkpoints are not supported")
    data = archive.read(pickles[0])
    return RestrictedUnpickler(io.BytesIO(data), archive, prefix, str(path)).load()


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (library errors are often several lines long)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else "no details"
