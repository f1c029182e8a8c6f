"""rajit from Python: Reciprocal Attention kernels generated and compiled at run time by
librajit_c.so (ctypes; no compilation against torch).

`import rajit` needs neither torch nor a GPU nor the library: `rajit.info()` and
`python -m rajit info` say what is there. With torch installed, `rajit.attention`,
`rajit.attention_paired`, `rajit.attention_folded` (torch.library custom ops with autograd and
fake implementations) and `rajit.nn.ReciprocalAttention` are available."""

from __future__ import annotations

from ._lib import (CompileError, DriverError, InternalError, InvalidArgumentError,
                   LibraryNotFoundError, NoGpuError, NvrtcError, RajitError)

__version__ = "0.1.0"

try:
    import torch as _torch  # noqa: F401
except ImportError as _e:  # rajit still imports; the torch entry points explain themselves
    _torch_error = f"torch is not installed ({_e}); pip install torch to use rajit.attention"

    def _needs_torch(*_args, **_kwargs):
        raise ImportError(_torch_error)

    attention = attention_paired = attention_folded = _needs_torch
    has_torch = False
else:
    from .ops import attention, attention_folded, attention_paired  # registers the custom ops
    has_torch = True


def info() -> dict:
    """What is there and what is missing: the library, NVRTC, the driver, GPUs and torch.
    Never raises; every missing piece has a "reason"."""
    from . import _lib

    out: dict = {"package": __version__}
    path = _lib.library_path()
    out["library"] = {"ok": path is not None, "path": path, "reason": _lib.load_error() or ""}
    if path is not None:
        out.update(_lib.info_dict())
    try:
        import torch

        t = {"ok": True, "version": torch.__version__, "cuda": torch.cuda.is_available()}
        if t["cuda"]:
            t["device"] = torch.cuda.get_device_name()
    except ImportError as e:
        t = {"ok": False, "reason": str(e)}
    out["torch"] = t
    return out


__all__ = ["attention", "attention_paired", "attention_folded", "info", "has_torch",
           "RajitError", "InvalidArgumentError", "CompileError", "NvrtcError", "DriverError",
           "NoGpuError", "InternalError", "LibraryNotFoundError"]
