"""Finds and loads librajit_c.so, mirrors the structs of tools/capi/rajit_c.h in ctypes, and turns
status codes into Python exceptions. Needs neither torch nor a GPU."""

from __future__ import annotations

import ctypes
import json
import os
import pathlib
import threading

ABI_VERSION = 1  # RAJIT_C_ABI_VERSION this binding was written for

RAJIT_OK = 0
RAJIT_INVALID_ARGUMENT = 1
RAJIT_COMPILE_ERROR = 2
RAJIT_NVRTC_ERROR = 3
RAJIT_DRIVER_ERROR = 4
RAJIT_NO_GPU = 5
RAJIT_INTERNAL = 6


class RajitError(RuntimeError):
    """Base of every error rajit raises; `status` is the C ABI status code."""

    status = RAJIT_INTERNAL


class InvalidArgumentError(RajitError, ValueError):
    """Bad spec, shape, stride, alignment or pointer; the message lists every problem, one per
    line, each naming the field. Nothing was launched."""

    status = RAJIT_INVALID_ARGUMENT


class CompileError(RajitError):
    status = RAJIT_COMPILE_ERROR


class NvrtcError(RajitError):
    status = RAJIT_NVRTC_ERROR


class DriverError(RajitError):
    status = RAJIT_DRIVER_ERROR


class NoGpuError(RajitError):
    status = RAJIT_NO_GPU


class InternalError(RajitError):
    status = RAJIT_INTERNAL


class LibraryNotFoundError(RajitError, ImportError):
    """librajit_c.so could not be found or loaded; the message says where rajit looked."""


_ERRORS = {
    cls.status: cls
    for cls in (InvalidArgumentError, CompileError, NvrtcError, DriverError, NoGpuError, InternalError)
}


# ---- structs (same order and types as rajit_c.h) -------------------------------------------

class Spec(ctypes.Structure):
    _fields_ = [("d_std", ctypes.c_int32), ("r", ctypes.c_int32), ("head_dim", ctypes.c_int32),
                ("causal", ctypes.c_int32), ("bias", ctypes.c_int32), ("dtype", ctypes.c_int32)]


class Tensor(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("shape", ctypes.c_int64 * 4),
                ("stride", ctypes.c_int64 * 4)]


class Bias(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("batch_stride", ctypes.c_int64),
                ("head_stride", ctypes.c_int64)]


class ForwardArgs(ctypes.Structure):
    _fields_ = [("spec", Spec),
                ("q_std", Tensor), ("k_low", Tensor), ("k_std", Tensor), ("q_low", Tensor),
                ("v", Tensor), ("o", Tensor),
                ("lse", ctypes.c_void_p),
                ("bias", Bias),
                ("w_std", ctypes.c_void_p), ("w_rec", ctypes.c_void_p), ("w_disc", ctypes.c_void_p),
                ("scale", ctypes.c_double),
                ("stream", ctypes.c_void_p),
                ("tile", ctypes.c_char_p)]


class BackwardArgs(ctypes.Structure):
    _fields_ = [("spec", Spec),
                ("q_std", Tensor), ("k_low", Tensor), ("k_std", Tensor), ("q_low", Tensor),
                ("v", Tensor), ("o", Tensor), ("d_o", Tensor),
                ("lse", ctypes.c_void_p),
                ("bias", Bias),
                ("w_std", ctypes.c_void_p), ("w_rec", ctypes.c_void_p), ("w_disc", ctypes.c_void_p),
                ("scale", ctypes.c_double),
                ("dq_std", Tensor), ("dk_low", Tensor), ("dk_std", Tensor), ("dq_low", Tensor),
                ("dv", Tensor),
                ("d_bias", ctypes.c_void_p),
                ("d_bias_batch_stride", ctypes.c_int64), ("d_bias_head_stride", ctypes.c_int64),
                ("dw_std", ctypes.c_void_p), ("dw_rec", ctypes.c_void_p), ("dw_disc", ctypes.c_void_p),
                ("workspace", ctypes.c_void_p), ("workspace_bytes", ctypes.c_size_t),
                ("deterministic", ctypes.c_int32),
                ("stream", ctypes.c_void_p)]


class ReferenceArgs(ctypes.Structure):
    _fields_ = [("spec", Spec),
                ("q_std", Tensor), ("k_low", Tensor), ("k_std", Tensor), ("q_low", Tensor),
                ("v", Tensor),
                ("bias", Bias),
                ("w_std", ctypes.c_void_p), ("w_rec", ctypes.c_void_p), ("w_disc", ctypes.c_void_p),
                ("scale", ctypes.c_double)]


class ReferenceGrads(ctypes.Structure):
    _fields_ = [("dq_std", Tensor), ("dk_low", Tensor), ("dk_std", Tensor), ("dq_low", Tensor),
                ("dv", Tensor),
                ("d_bias", ctypes.c_void_p),
                ("d_bias_batch_stride", ctypes.c_int64), ("d_bias_head_stride", ctypes.c_int64),
                ("dw_std", ctypes.c_void_p), ("dw_rec", ctypes.c_void_p), ("dw_disc", ctypes.c_void_p)]


# ---- finding and loading the library -------------------------------------------------------

_LIB_NAME = "librajit_c.so"
_lock = threading.Lock()
_lib = None
_load_error: str | None = None
_lib_path: str | None = None


def candidate_paths() -> list[tuple[str, pathlib.Path]]:
    """Where rajit looks, in order: $RAJIT_LIBRARY (alone, when set), the copy inside this
    package, then the build folders of a source checkout this package sits in."""
    env = os.environ.get("RAJIT_LIBRARY")
    if env:
        return [("$RAJIT_LIBRARY", pathlib.Path(env))]
    here = pathlib.Path(__file__).resolve().parent
    out = [("package", here / _LIB_NAME)]
    repo = here.parent.parent  # <repo>/python/rajit -> <repo>
    for build in ("build", "build-release", "build-debug"):
        out.append(("source checkout", repo / build / _LIB_NAME))
    return out


def _declare(lib: ctypes.CDLL) -> None:
    c_int, c_char_p, c_void_p = ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p
    P = ctypes.POINTER
    lib.rajit_version.restype = c_char_p
    lib.rajit_version.argtypes = []
    lib.rajit_abi_version.restype = c_int
    lib.rajit_abi_version.argtypes = []
    lib.rajit_last_error.restype = c_char_p
    lib.rajit_last_error.argtypes = []
    lib.rajit_status_name.restype = c_char_p
    lib.rajit_status_name.argtypes = [c_int]
    lib.rajit_info_json.restype = c_int
    lib.rajit_info_json.argtypes = [P(c_char_p)]
    lib.rajit_device_count.restype = c_int
    lib.rajit_device_count.argtypes = []
    for name in ("rajit_forward", "rajit_check_forward"):
        getattr(lib, name).restype = c_int
        getattr(lib, name).argtypes = [P(ForwardArgs)]
    lib.rajit_backward.restype = c_int
    lib.rajit_backward.argtypes = [P(BackwardArgs)]
    lib.rajit_backward_workspace_bytes.restype = c_int
    lib.rajit_backward_workspace_bytes.argtypes = [P(BackwardArgs), P(ctypes.c_size_t)]
    lib.rajit_reference_forward.restype = c_int
    lib.rajit_reference_forward.argtypes = [P(ReferenceArgs), Tensor, c_void_p]
    lib.rajit_reference_backward.restype = c_int
    lib.rajit_reference_backward.argtypes = [P(ReferenceArgs), Tensor, P(ReferenceGrads)]


def _try_load() -> None:
    global _lib, _load_error, _lib_path
    tried = []
    for origin, path in candidate_paths():
        if not path.is_file():
            tried.append(f"  {path} ({origin}): no such file")
            continue
        try:
            lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_LOCAL)
        except OSError as e:
            tried.append(f"  {path} ({origin}): {e}")
            continue
        if not hasattr(lib, "rajit_abi_version") or lib.rajit_abi_version() != ABI_VERSION:
            have = lib.rajit_abi_version() if hasattr(lib, "rajit_abi_version") else "none"
            tried.append(f"  {path} ({origin}): C ABI version {have}, this package needs {ABI_VERSION}")
            continue
        _declare(lib)
        _lib, _lib_path = lib, str(path)
        return
    _load_error = (
        "librajit_c.so not found or not loadable; looked at:\n" + "\n".join(tried) +
        "\nBuild it (bash scripts/setup.sh, target rajit_c) and set RAJIT_LIBRARY=/path/to/librajit_c.so,"
        " or reinstall the package after building (pip install ./python).")


def lib() -> ctypes.CDLL:
    """The loaded library. Raises: LibraryNotFoundError saying where rajit looked."""
    with _lock:
        if _lib is None and _load_error is None:
            _try_load()
    if _lib is None:
        raise LibraryNotFoundError(_load_error)
    return _lib


def library_path() -> str | None:
    """Path of the loaded library, or None when it cannot be loaded."""
    try:
        lib()
    except LibraryNotFoundError:
        return None
    return _lib_path


def load_error() -> str | None:
    try:
        lib()
    except LibraryNotFoundError as e:
        return str(e)
    return None


def check(status: int) -> None:
    """Raises the exception class of `status` with the library's message, unchanged."""
    if status == RAJIT_OK:
        return
    message = lib().rajit_last_error().decode("utf-8", "replace")
    raise _ERRORS.get(status, InternalError)(message)


def version() -> str:
    return lib().rajit_version().decode()


def info_dict() -> dict:
    out = ctypes.c_char_p()
    check(lib().rajit_info_json(ctypes.byref(out)))
    return json.loads(out.value.decode())
