"""rajit's torch ops without a GPU: float64 reference mode (gradcheck, every layout, aliasing),
argument errors as ValueError, fake-tensor shape propagation, opcheck, and torch.compile."""

import math
import os
import unittest

from rajit import _lib

try:
    import torch
except ImportError:
    torch = None

_REASON = ("torch is not installed: the torch tests are skipped (pip install torch to run them)"
           if torch is None else "librajit_c.so not found (set RAJIT_LIBRARY)")
_OK = torch is not None and _lib.library_path() is not None

if _OK:
    import rajit
    import rajit.nn
    from rajit import ops
    from rajit.reference import ra_attention_torch


def _rand(*shape, requires_grad=True):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=requires_grad)


@unittest.skipUnless(_OK, _REASON)
class ReferenceMode(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)

    def inputs(self, B=1, H=2, Tq=4, Tk=4, ds=8, r=4, dv=32, bias="shared"):
        q_std, k_low = _rand(B, H, Tq, ds), _rand(B, H, Tq, r)
        k_std, q_low, v = _rand(B, H, Tk, ds), _rand(B, H, Tk, r), _rand(B, H, Tk, dv)
        beta = None if bias is None else _rand(*((H, Tk) if bias == "shared" else (B, H, Tk)))
        gates = [(torch.rand(H, dtype=torch.float64) + 0.5).requires_grad_() for _ in range(3)]
        return q_std, k_low, k_std, q_low, v, beta, gates

    def test_forward_matches_the_pure_pytorch_ra(self):
        for causal, (Tq, Tk), bias in [(True, (5, 5), "shared"), (True, (3, 6), "batch"),
                                       (False, (4, 7), None), (True, (6, 3), "shared")]:
            with self.subTest(causal=causal, Tq=Tq, Tk=Tk, bias=bias):
                q_std, k_low, k_std, q_low, v, beta, (ws, wr, wd) = self.inputs(B=2, Tq=Tq, Tk=Tk, bias=bias)
                wd = wd if beta is not None else None
                o, lse = rajit.attention(q_std, k_low, k_std, q_low, v, causal=causal, bias=beta,
                                         w_std=ws, w_rec=wr, w_disc=wd, return_lse=True)
                o2, lse2 = ra_attention_torch(q_std, k_low, k_std, q_low, v, causal=causal,
                                              bias=beta, w_std=ws, w_rec=wr, w_disc=wd,
                                              return_lse=True)
                self.assertLess((o - o2).abs().max().item(), 1e-12)
                self.assertTrue(torch.equal(torch.isinf(lse), torch.isinf(lse2)))
                fin = torch.isfinite(lse2)
                self.assertLess((lse[fin] - lse2[fin]).abs().max().item(), 1e-12)
                self.assertFalse(torch.isnan(o).any())

    def test_gradcheck_every_input(self):
        for causal, Tq, Tk, bias in [(True, 4, 4, "shared"), (True, 3, 5, "batch"), (False, 4, 3, None)]:
            with self.subTest(causal=causal, Tq=Tq, Tk=Tk, bias=bias):
                q_std, k_low, k_std, q_low, v, beta, (ws, wr, wd) = self.inputs(B=2, Tq=Tq, Tk=Tk, bias=bias)
                if beta is None:
                    wd = None

                def f(q_std, k_low, k_std, q_low, v, *rest):
                    beta, ws, wr, wd = rest
                    return rajit.attention(q_std, k_low, k_std, q_low, v, causal=causal, bias=beta,
                                           w_std=ws, w_rec=wr, w_disc=wd, scale=0.3)
                args = (q_std, k_low, k_std, q_low, v, beta, ws, wr, wd)
                self.assertTrue(torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-8))

    def test_gradcheck_packed_layouts_and_full_rank_aliasing(self):
        ds, r, H, T = 8, 4, 2, 4
        beta = _rand(H, T)
        Q, K, V = _rand(1, H, T, ds + r), _rand(1, H, T, ds + r), _rand(1, H, T, 32)
        for name, fn in (("paired", rajit.attention_paired), ("folded", rajit.attention_folded)):
            with self.subTest(layout=name):
                self.assertTrue(torch.autograd.gradcheck(
                    lambda Q, K, V, b: fn(Q, K, V, ds, causal=True, bias=b), (Q, K, V, beta),
                    eps=1e-6, atol=1e-8))
        # Full-rank reciprocity passes one tensor twice (q_std is q_low, k_std is k_low):
        # autograd must add the two gradients of each.
        Qs, Ks, Vs = _rand(1, H, T, 8), _rand(1, H, T, 8), _rand(1, H, T, 32)
        self.assertTrue(torch.autograd.gradcheck(
            lambda Q, K, V: rajit.attention(Q, K, K, Q, V, causal=True), (Qs, Ks, Vs),
            eps=1e-6, atol=1e-8))

    def test_packed_layouts_equal_the_four_operand_call(self):
        ds = 8
        Q, K, V = _rand(2, 2, 5, 12), _rand(2, 2, 5, 12), _rand(2, 2, 5, 32)
        paired = rajit.attention_paired(Q, K, V, ds, causal=True)
        want = rajit.attention(Q[..., :ds], K[..., ds:], K[..., :ds], Q[..., ds:], V, causal=True)
        self.assertLess((paired - want).abs().max().item(), 1e-14)
        folded = rajit.attention_folded(Q, K, V, ds, causal=True)
        want = rajit.attention(Q[..., :ds], Q[..., ds:], K[..., :ds], K[..., ds:], V, causal=True)
        self.assertLess((folded - want).abs().max().item(), 1e-14)
        g1 = torch.autograd.grad(folded.sum(), (Q, K, V))
        g2 = torch.autograd.grad(want.sum(), (Q, K, V))
        for a, b in zip(g1, g2):
            self.assertLess((a - b).abs().max().item(), 1e-12)

    def test_eager_path_equals_the_custom_ops_in_value_and_every_gradient(self):
        # Eager calls on plain tensors skip the dispatcher (ops._RaEager, ops._PackedEager); the
        # custom ops stay for compile, fake tensors and dispatch modes. Both must agree exactly.
        from torch.utils.flop_counter import FlopCounterMode
        q_std, k_low, k_std, q_low, v, beta, (ws, wr, wd) = self.inputs(B=2, Tq=5, Tk=5)
        args = (q_std, k_low, k_std, q_low, v, beta, ws, wr, wd)
        self.assertTrue(ops._eager_fast_path(*args))
        with FlopCounterMode(display=False):
            self.assertFalse(ops._eager_fast_path(*args))
        for name, call_op, call_eager in [
            ("separate", lambda *a: ops.ra_fwd(*a, True, 0.0)[0],
             lambda *a: ops._RaEager.apply(*a, True, 0.0)[0]),
            ("folded", lambda *a: ops.ra_packed_fwd(torch.cat([a[0], a[1]], -1),
                                                    torch.cat([a[2], a[3]], -1), *a[4:], 8,
                                                    True, True, 0.0)[0],
             lambda *a: ops._PackedEager.apply(torch.cat([a[0], a[1]], -1),
                                               torch.cat([a[2], a[3]], -1), *a[4:], 8, True,
                                               True, 0.0)[0])]:
            with self.subTest(layout=name):
                d_o = torch.randn(2, 2, 5, 32, dtype=torch.float64)
                want = call_op(*args)
                got = call_eager(*args)
                self.assertTrue(torch.equal(got, want))
                g_want = torch.autograd.grad(want, args, d_o)
                g_got = torch.autograd.grad(got, args, d_o)
                for i, (a, b) in enumerate(zip(g_got, g_want)):
                    self.assertTrue(torch.equal(a, b), f"gradient {i}")
        # The public call takes the eager path and still matches the float64 PyTorch RA.
        o = rajit.attention(*args[:5], causal=True, bias=beta, w_std=ws, w_rec=wr, w_disc=wd)
        o2 = ra_attention_torch(*args[:5], causal=True, bias=beta, w_std=ws, w_rec=wr, w_disc=wd)
        self.assertLess((o - o2).abs().max().item(), 1e-12)

    def test_r0_and_gates_zero_equal_plain_attention(self):
        q, k, v = _rand(1, 2, 6, 8), _rand(1, 2, 6, 8), _rand(1, 2, 6, 32)
        o = rajit.attention(q, None, k, None, v, causal=True)
        want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        self.assertLess((o - want).abs().max().item(), 1e-12)
        kl, ql = _rand(1, 2, 6, 4), _rand(1, 2, 6, 4)
        o = rajit.attention(q, kl, k, ql, v, causal=True, w_rec=torch.zeros(2, dtype=torch.float64),
                            scale=1 / math.sqrt(8))
        self.assertLess((o - want).abs().max().item(), 1e-12)

    def test_expanded_bias_gets_the_batch_summed_gradient(self):
        q_std, k_low, k_std, q_low, v, beta, _ = self.inputs(B=3, bias="shared")
        o = rajit.attention(q_std, k_low, k_std, q_low, v, causal=True, bias=beta.expand(3, -1, -1))
        (g,) = torch.autograd.grad(o.square().sum(), beta)
        o2 = ra_attention_torch(q_std, k_low, k_std, q_low, v, causal=True, bias=beta)
        (g2,) = torch.autograd.grad(o2.square().sum(), beta)
        self.assertLess((g - g2).abs().max().item(), 1e-12)


@unittest.skipUnless(_OK, _REASON)
class Errors(unittest.TestCase):
    def test_non_unit_last_stride_is_refused_naming_the_field_and_nothing_is_copied(self):
        q = torch.randn(1, 2, 4, 16, dtype=torch.float64)[..., ::2]
        k, v = torch.randn(1, 2, 4, 8, dtype=torch.float64), torch.randn(1, 2, 4, 32, dtype=torch.float64)
        with self.assertRaisesRegex(ValueError, r"q_std: last stride is 2, must be 1"):
            rajit.attention(q, None, k, None, v, causal=True)

    def test_cpu_needs_float64_and_dtypes_must_agree(self):
        q = torch.randn(1, 2, 4, 8)
        with self.assertRaisesRegex(ValueError, r"q_std: dtype torch.float32 on CPU.*float64"):
            rajit.attention(q, None, q, None, torch.randn(1, 2, 4, 32), causal=True)
        with self.assertRaisesRegex(ValueError, r"v: dtype torch.float32, but q_std is torch.float64"):
            rajit.attention(q.double(), None, q.double(), None, torch.randn(1, 2, 4, 32), causal=True)

    def test_spec_errors_from_cpp_arrive_as_value_error_with_the_same_text(self):
        q, k = _rand(1, 2, 4, 8), _rand(1, 2, 4, 8)
        lo, v = _rand(1, 2, 4, 3), _rand(1, 2, 4, 33)
        with self.assertRaises(ValueError) as cm:
            rajit.attention(q, lo, k, lo, v, causal=True)
        self.assertIn("r=3: must be a multiple of 4 in [0, 256]", str(cm.exception))
        self.assertIn("head_dim=33: must be one of 32, 64, 96, 128 or 256", str(cm.exception))
        self.assertIsInstance(cm.exception, rajit.InvalidArgumentError)

    def test_shape_and_side_input_errors_are_listed_together(self):
        q, k, v = _rand(1, 2, 4, 8), _rand(1, 2, 4, 8), _rand(1, 2, 4, 32)
        with self.assertRaises(ValueError) as cm:
            rajit.attention(q, None, k, None, v, causal=True, bias=_rand(3, 4),
                            w_std=_rand(5), scale=-1.0)
        msg = str(cm.exception)
        self.assertIn("w_std: shape (5,), must be one of (2,)", msg)
        self.assertIn("bias: shape (3, 4), must be one of (2, 4), (1, 2, 4)", msg)
        self.assertIn("scale=-1.0: must be a finite number > 0", msg)
        # Tk comes from k_std (5 rows), so v's 4 rows are the problem, named as the C++ names it.
        with self.assertRaisesRegex(ValueError, r"v: shape \(1, 2, 4, 32\) must be \(1, 2, 5, 32\)"):
            rajit.attention(_rand(1, 2, 4, 8), None, _rand(1, 2, 5, 8), None, _rand(1, 2, 4, 32),
                            causal=True)


@unittest.skipUnless(_OK, _REASON)
class FakeAndCompile(unittest.TestCase):
    def test_fake_tensors_propagate_shapes_and_layout(self):
        from torch._subclasses.fake_tensor import FakeTensorMode
        with FakeTensorMode():
            qf = torch.empty(2, 64, 3, 3 * 64, dtype=torch.float64).transpose(1, 2)[..., :64]
            kf = torch.empty(2, 3, 64, 64, dtype=torch.float64)
            v = torch.empty(2, 3, 64, 32, dtype=torch.float64)
            o, lse = rajit.attention_folded(qf, kf, v, 56, causal=True, return_lse=True)
            self.assertEqual(tuple(o.shape), (2, 3, 64, 32))
            self.assertEqual(o.stride(), (64 * 3 * 32, 32, 3 * 32, 1))  # (B, T, H, D) memory
            self.assertEqual(tuple(lse.shape), (2, 3, 64))
            g = ops.ra_packed_bwd(qf, kf, v, None, None, None, None, o, lse, o, 56, True, True, 0.0)
            self.assertEqual([tuple(t.shape) for t in g[:3]], [(2, 3, 64, 64), (2, 3, 64, 64), (2, 3, 64, 32)])

    def test_opcheck(self):
        H, T = 2, 4
        q_std, k_low, k_std, q_low = _rand(1, H, T, 8), _rand(1, H, T, 4), _rand(1, H, T, 8), _rand(1, H, T, 4)
        v, beta, w = _rand(1, H, T, 32), _rand(H, T), _rand(H)
        torch.library.opcheck(ops.ra_fwd, (q_std, k_low, k_std, q_low, v, beta, w, w, w, True, 0.0))
        Q, K = _rand(1, H, T, 12), _rand(1, H, T, 12)
        torch.library.opcheck(ops.ra_packed_fwd, (Q, K, v, beta, w, None, w, 8, True, True, 0.0))
        # The backward ops have no autograd of their own (no double backward): check them on
        # tensors that do not require grad.
        q_std, k_low, k_std, q_low, v, beta, w, Q, K = (
            t.detach() for t in (q_std, k_low, k_std, q_low, v, beta, w, Q, K))
        o, lse = ops.ra_fwd(q_std, k_low, k_std, q_low, v, beta, w, w, w, True, 0.0)
        d_o = torch.randn_like(o)
        torch.library.opcheck(ops.ra_bwd, (q_std, k_low, k_std, q_low, v, beta, w, w, w, o, lse, d_o,
                                           True, 0.0))
        torch.library.opcheck(ops.ra_packed_bwd, (Q, K, v, beta, w, None, w, o, lse, d_o, 8, False,
                                                  True, 0.0))
        # r = 0 and no bias: the op still returns one distinct tensor per gradient slot.
        o, lse = ops.ra_fwd(q_std, None, k_std, None, v, None, None, None, None, False, 0.0)
        torch.library.opcheck(ops.ra_fwd, (q_std, None, k_std, None, v, None, None, None, None, False, 0.0))
        torch.library.opcheck(ops.ra_bwd, (q_std, None, k_std, None, v, None, None, None, None, o, lse,
                                           d_o, False, 0.0))

    def test_torch_compile_fullgraph_of_a_block_in_reference_mode(self):
        torch.manual_seed(1)
        block = rajit.nn.ReciprocalAttention(64, 2, 16, d_std=8, r=4, head_dim=32).double()
        x = torch.randn(2, 10, 64, dtype=torch.float64, requires_grad=True)
        want = block(x)
        (gx,) = torch.autograd.grad(want.sum(), x)
        # aot_eager traces exactly what inductor traces (dynamo + AOTAutograd through the fake
        # and autograd registrations) without a minute of C++ compiles; RAJIT_TEST_INDUCTOR=1
        # runs the real inductor backend instead.
        backend = "inductor" if os.environ.get("RAJIT_TEST_INDUCTOR") == "1" else "aot_eager"
        compiled = torch.compile(block, fullgraph=True, backend=backend)
        got = compiled(x)
        (gx2,) = torch.autograd.grad(got.sum(), x)
        self.assertLess((got - want).abs().max().item(), 1e-12)
        self.assertLess((gx - gx2).abs().max().item(), 1e-12)


@unittest.skipUnless(_OK, _REASON)
class Module(unittest.TestCase):
    def test_rajit_and_torch_backends_agree_in_value_and_gradient(self):
        torch.manual_seed(2)
        a = rajit.nn.ReciprocalAttention(64, 2, 16, d_std=8, r=4, head_dim=32).double()
        b = rajit.nn.ReciprocalAttention(64, 2, 16, d_std=8, r=4, head_dim=32, backend="torch").double()
        b.load_state_dict(a.state_dict())
        with torch.no_grad():
            a.d_bias.normal_()
            b.d_bias.copy_(a.d_bias)
            for p, q in ((a.w_rec, b.w_rec), (a.w_std, b.w_std)):
                p.uniform_(0.5, 1.5)
                q.copy_(p)
        x = torch.randn(2, 12, 64, dtype=torch.float64)
        ya, yb = a(x), b(x)
        self.assertLess((ya - yb).abs().max().item(), 1e-12)
        ya.square().sum().backward()
        yb.square().sum().backward()
        for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
            with self.subTest(param=name):
                self.assertIsNotNone(pa.grad)
                self.assertLess((pa.grad - pb.grad).abs().max().item(), 1e-10)

    def test_sdpa_backend_is_only_the_baseline(self):
        with self.assertRaisesRegex(ValueError, "backend='sdpa'"):
            rajit.nn.ReciprocalAttention(64, 2, 16, r=4, backend="sdpa")
        m = rajit.nn.ReciprocalAttention(64, 2, 16, r=0, disc_bias=False, gates=False, backend="sdpa")
        self.assertEqual(tuple(m(torch.randn(1, 5, 64)).shape), (1, 5, 64))


if __name__ == "__main__":
    unittest.main()
