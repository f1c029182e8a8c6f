"""rajit's Python package without torch and without a GPU: import, `python -m rajit info`, library
search, and the C ABI's status codes and messages (through ctypes and the float64 reference)."""

import ctypes
import json
import math
import os
import random
import subprocess
import sys
import unittest

import rajit
from rajit import _lib

# Runs Python with torch made unimportable, as on a CI machine without it.
_NO_TORCH = "import sys; sys.modules['torch'] = None; "


def _python(code: str, env=None):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)


def _have_library() -> bool:
    return _lib.library_path() is not None


class ImportWithoutTorch(unittest.TestCase):
    def test_import_works_and_attention_says_torch_is_missing(self):
        r = _python(_NO_TORCH + "import rajit\n"
                    "assert not rajit.has_torch\n"
                    "try:\n    rajit.attention(None, None, None, None, None, causal=True)\n"
                    "except ImportError as e:\n    print('ImportError:', e)\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("ImportError: torch is not installed", r.stdout)

    def test_info_reports_torch_missing_and_exits_0(self):
        r = _python(_NO_TORCH + "import sys; from rajit.__main__ import main; sys.exit(main(['info']))")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"torch\s+MISSING")

    def test_module_entry_point_runs(self):
        r = subprocess.run([sys.executable, "-m", "rajit", "info"], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("library", r.stdout)
        self.assertIn("torch", r.stdout)


class LibrarySearch(unittest.TestCase):
    def test_missing_library_is_reported_with_the_path_and_info_still_exits_0(self):
        env = dict(os.environ, RAJIT_LIBRARY="/nonexistent/librajit_c.so")
        r = subprocess.run([sys.executable, "-m", "rajit", "info"], capture_output=True, text=True,
                           env=env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"library\s+MISSING.*librajit_c\.so not found")
        self.assertIn("/nonexistent/librajit_c.so", r.stdout)

    def test_using_a_missing_library_raises_an_import_error_naming_it(self):
        env = dict(os.environ, RAJIT_LIBRARY="/nonexistent/librajit_c.so")
        r = _python("import rajit._lib as l\n"
                    "try:\n    l.lib()\nexcept ImportError as e:\n    print(type(e).__name__, e)\n",
                    env=env)
        self.assertIn("LibraryNotFoundError", r.stdout)
        self.assertIn("/nonexistent/librajit_c.so (RAJIT_LIBRARY", r.stdout.replace("$", ""))


@unittest.skipUnless(_have_library(), "librajit_c.so not found (set RAJIT_LIBRARY)")
class CAbi(unittest.TestCase):
    def test_version_and_info_json(self):
        self.assertEqual(_lib.version(), rajit.__version__)
        d = _lib.info_dict()
        for key in ("version", "abi", "templates", "cache_dir", "nvrtc", "driver", "gpus"):
            self.assertIn(key, d)
        self.assertEqual(d["abi"], _lib.ABI_VERSION)
        if not d["driver"]["ok"]:
            self.assertTrue(d["driver"]["reason"])  # says why
            self.assertEqual(d["gpus"], [])

    def test_status_names(self):
        names = [_lib.lib().rajit_status_name(s).decode() for s in range(7)]
        self.assertEqual(names[1], "RAJIT_INVALID_ARGUMENT")
        self.assertEqual(names[5], "RAJIT_NO_GPU")
        self.assertEqual(_lib.lib().rajit_status_name(99).decode(), "RAJIT_UNKNOWN_STATUS")


# ---- the float64 reference through ctypes (no torch) ---------------------------------------

class HostTensor:
    """A contiguous (B, H, T, W) float64 array for ctypes."""

    def __init__(self, shape, values=None, rng=None):
        self.shape = shape
        n = shape[0] * shape[1] * shape[2] * shape[3]
        vals = values if values is not None else [rng.uniform(-1, 1) for _ in range(n)]
        self.buf = (ctypes.c_double * n)(*vals)

    def at(self, b, h, i, c):
        B, H, T, W = self.shape
        return self.buf[((b * H + h) * T + i) * W + c]

    def c(self):
        t = _lib.Tensor()
        t.ptr = ctypes.addressof(self.buf)
        B, H, T, W = self.shape
        for d, (n, s) in enumerate(zip(self.shape, (H * T * W, T * W, W, 1))):
            t.shape[d], t.stride[d] = n, s
        return t


def _python_ra(q_std, k_low, k_std, q_low, v, beta, w, scale, causal):
    """O of ra-math.md for B = 1, in plain Python (beta: per (h, j); w: (w_std, w_rec, w_disc))."""
    _, H, Tq, Ds = q_std.shape
    Tk, R, Dv = k_std.shape[2], k_low.shape[3], v.shape[3]
    out = {}
    for h in range(H):
        for i in range(Tq):
            s = []
            for j in range(Tk):
                if causal and j > i + (Tk - Tq):
                    s.append(-math.inf)
                    continue
                std = sum(q_std.at(0, h, i, c) * k_std.at(0, h, j, c) for c in range(Ds))
                rec = sum(k_low.at(0, h, i, c) * q_low.at(0, h, j, c) for c in range(R))
                s.append(scale * (w[0][h] * std + w[1][h] * rec) + w[2][h] * beta[h][j])
            m = max(s)
            p = [math.exp(x - m) for x in s]
            z = sum(p)
            for c in range(Dv):
                out[(h, i, c)] = sum(p[j] * v.at(0, h, j, c) for j in range(Tk)) / z
    return out


@unittest.skipUnless(_have_library(), "librajit_c.so not found (set RAJIT_LIBRARY)")
class ReferenceThroughCAbi(unittest.TestCase):
    def setUp(self):
        self.rng = random.Random(7)

    def problem(self, d_std=8, r=4, dv=32, H=2, Tq=3, Tk=5, causal=True):
        rng = self.rng
        t = {
            "q_std": HostTensor((1, H, Tq, d_std), rng=rng), "k_low": HostTensor((1, H, Tq, r), rng=rng),
            "k_std": HostTensor((1, H, Tk, d_std), rng=rng), "q_low": HostTensor((1, H, Tk, r), rng=rng),
            "v": HostTensor((1, H, Tk, dv), rng=rng),
        }
        a = _lib.ReferenceArgs()
        a.spec = _lib.Spec(d_std, r, dv, 1 if causal else 0, 1, 0)
        for name, ht in t.items():
            setattr(a, name, ht.c())
        beta = [[rng.uniform(-1, 1) for _ in range(Tk)] for _ in range(H)]
        self.beta_buf = (ctypes.c_double * (H * Tk))(*[x for row in beta for x in row])
        a.bias.ptr, a.bias.batch_stride, a.bias.head_stride = ctypes.addressof(self.beta_buf), 0, Tk
        gates = [[rng.uniform(0.5, 1.5) for _ in range(H)] for _ in range(3)]
        self.gate_bufs = [(ctypes.c_double * H)(*g) for g in gates]
        a.w_std, a.w_rec, a.w_disc = [ctypes.addressof(g) for g in self.gate_bufs]
        a.scale = 0.0
        return a, t, beta, gates

    def test_reference_forward_matches_a_plain_python_evaluation(self):
        a, t, beta, gates = self.problem()
        H, Tq, Dv = 2, 3, 32
        o = HostTensor((1, H, Tq, Dv), values=[math.nan] * (H * Tq * Dv))
        lse = (ctypes.c_double * (H * Tq))()
        _lib.check(_lib.lib().rajit_reference_forward(ctypes.byref(a), o.c(), ctypes.addressof(lse)))
        want = _python_ra(t["q_std"], t["k_low"], t["k_std"], t["q_low"], t["v"], beta, gates,
                          1 / math.sqrt(12), True)
        worst = max(abs(o.at(0, h, i, c) - x) for (h, i, c), x in want.items())
        self.assertLess(worst, 1e-12)

    def test_bad_spec_is_an_invalid_argument_with_the_cpp_problem_list(self):
        a, _, _, _ = self.problem()
        a.spec.r, a.spec.head_dim = 3, 33
        o = HostTensor((1, 2, 3, 33), values=[0.0] * (2 * 3 * 33))
        with self.assertRaises(ValueError) as cm:
            _lib.check(_lib.lib().rajit_reference_forward(ctypes.byref(a), o.c(), None))
        self.assertIsInstance(cm.exception, rajit.InvalidArgumentError)
        msg = str(cm.exception)
        self.assertIn("r=3: must be a multiple of 4 in [0, 256]", msg)
        self.assertIn("head_dim=33: must be one of", msg)
        self.assertEqual(len(msg.splitlines()), 2)  # every problem, one per line

    def test_wrong_shape_names_the_field(self):
        a, _, _, _ = self.problem()
        o = HostTensor((1, 2, 4, 32), values=[0.0] * (2 * 4 * 32))  # Tq is 3
        with self.assertRaisesRegex(rajit.InvalidArgumentError, r"o: shape \(1, 2, 4, 32\) must be \(1, 2, 3, 32\)"):
            _lib.check(_lib.lib().rajit_reference_forward(ctypes.byref(a), o.c(), None))

    def test_null_arguments_and_bad_enums_are_refused(self):
        with self.assertRaisesRegex(rajit.InvalidArgumentError, "args must not be NULL"):
            _lib.check(_lib.lib().rajit_forward(None))
        a, _, _, _ = self.problem()
        a.spec.dtype, a.spec.bias = 7, 2
        with self.assertRaises(rajit.InvalidArgumentError) as cm:
            _lib.check(_lib.lib().rajit_reference_forward(ctypes.byref(a), _lib.Tensor(), None))
        self.assertIn("spec.bias=2: must be 0 (none) or 1 (column)", str(cm.exception))
        self.assertIn("spec.dtype=7: must be 0 (fp16) or 1 (bf16)", str(cm.exception))
        self.assertEqual(_lib.lib().rajit_last_error().decode(), str(cm.exception))

    def test_forward_without_a_gpu_is_no_gpu_after_the_argument_checks(self):
        if _lib.lib().rajit_device_count() > 0:
            self.skipTest("a GPU is present; this checks the no-driver path")
        f = _lib.ForwardArgs()
        f.spec = _lib.Spec(56, 8, 64, 1, 0, 1)
        B, H, T = 1, 2, 16

        def view(width, base):
            t = _lib.Tensor()
            t.ptr = base
            for d, (n, s) in enumerate(zip((B, H, T, width), (H * T * 64, T * 64, 64, 1))):
                t.shape[d], t.stride[d] = n, s
            return t
        # Aligned made-up addresses: the checks pass, then the driver is needed and is not there.
        f.q_std, f.k_low = view(56, 0x10000), view(8, 0x10070)
        f.k_std, f.q_low = view(56, 0x20000), view(8, 0x20070)
        f.v, f.o = view(64, 0x30000), view(64, 0x40000)
        self.assertEqual(_lib.lib().rajit_check_forward(ctypes.byref(f)), 0,
                         _lib.lib().rajit_last_error())
        with self.assertRaises(rajit.NoGpuError) as cm:
            _lib.check(_lib.lib().rajit_forward(ctypes.byref(f)))
        self.assertIn("CUDA driver unavailable", str(cm.exception))
        f.v.stride[3] = 2
        with self.assertRaisesRegex(rajit.InvalidArgumentError, "v: "):
            _lib.check(_lib.lib().rajit_forward(ctypes.byref(f)))

    def test_backward_workspace_size_needs_no_gpu_and_null_args_are_refused(self):
        a = _lib.BackwardArgs()
        a.spec = _lib.Spec(56, 8, 64, 1, 0, 1)
        sentinel = (1 << 64) - 1
        nbytes = ctypes.c_size_t(sentinel)
        _lib.check(_lib.lib().rajit_backward_workspace_bytes(ctypes.byref(a), ctypes.byref(nbytes)))
        self.assertNotEqual(nbytes.value, sentinel)  # written
        with self.assertRaisesRegex(rajit.InvalidArgumentError, r"rajit_backward_workspace_bytes \(bytes\)"):
            _lib.check(_lib.lib().rajit_backward_workspace_bytes(ctypes.byref(a), None))
        with self.assertRaisesRegex(rajit.InvalidArgumentError, "rajit_backward: args must not be NULL"):
            _lib.check(_lib.lib().rajit_backward(None))
        a.spec.d_std = 3
        with self.assertRaisesRegex(rajit.InvalidArgumentError, r"d_std=3: must be a multiple of 4"):
            _lib.check(_lib.lib().rajit_backward(ctypes.byref(a)))


if __name__ == "__main__":
    unittest.main()
