/// Host tests for the float64 CPU reference: against naive formulas, identities of ra-math.md and
/// central finite differences of its backward.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "tuner/reference.hpp"

using rajit::gen::AttentionSpec;
using rajit::gen::BiasKind;
using rajit::gen::Dtype;
using rajit::tune::RefProblem;

namespace {

std::vector<double> random_vec(std::mt19937_64& rng, std::size_t n, double lo = -1.0, double hi = 1.0) {
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

// A problem with random inputs (and random gates) of the given sizes. Sizes need not be valid
// spec widths: the reference does not validate.
RefProblem make_problem(int B, int H, int Tq, int Tk, int Ds, int R, int Dv, bool causal,
                        BiasKind bias, int bias_batch, std::uint64_t seed, bool gates = true) {
  std::mt19937_64 rng(seed);
  RefProblem p;
  p.spec = AttentionSpec{Ds, R, Dv, causal, bias, Dtype::kBf16};
  p.batch = B;
  p.heads = H;
  p.seqlen_q = Tq;
  p.seqlen_k = Tk;
  p.bias_batch = bias_batch;
  const auto n = [](long long a, long long b, long long c, long long d) {
    return static_cast<std::size_t>(a * b * c * d);
  };
  p.q_std = random_vec(rng, n(B, H, Tq, Ds));
  p.k_low = random_vec(rng, n(B, H, Tq, R));
  p.k_std = random_vec(rng, n(B, H, Tk, Ds));
  p.q_low = random_vec(rng, n(B, H, Tk, R));
  p.v = random_vec(rng, n(B, H, Tk, Dv));
  if (bias == BiasKind::kColumn) p.bias = random_vec(rng, n(bias_batch, H, Tk, 1), -2.0, 2.0);
  if (gates) {
    p.w_std = random_vec(rng, static_cast<std::size_t>(H), 0.5, 1.5);
    p.w_rec = random_vec(rng, static_cast<std::size_t>(H), 0.5, 1.5);
    p.w_disc = random_vec(rng, static_cast<std::size_t>(H), 0.5, 1.5);
  }
  return p;
}

// ra-math.md's forward written out independently: logits matrix, then a two-pass softmax.
rajit::tune::RefForward naive_forward(const RefProblem& p) {
  const int B = p.batch, H = p.heads, Tq = p.seqlen_q, Tk = p.seqlen_k;
  const int Ds = p.spec.d_std, R = p.spec.r, Dv = p.spec.head_dim;
  const double scale = p.scale != 0 ? p.scale : 1.0 / std::sqrt(double(Ds + R));
  rajit::tune::RefForward out;
  out.o.assign(std::size_t(B) * H * Tq * Dv, 0.0);
  out.lse.assign(std::size_t(B) * H * Tq, 0.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const double ws = p.w_std.empty() ? 1 : p.w_std[h];
      const double wr = p.w_rec.empty() ? 1 : p.w_rec[h];
      const double wd = p.w_disc.empty() ? 1 : p.w_disc[h];
      for (int i = 0; i < Tq; ++i) {
        std::vector<double> s(Tk);
        std::vector<bool> vis(Tk);
        bool any = false;
        for (int j = 0; j < Tk; ++j) {
          vis[j] = !p.spec.causal || j - i <= Tk - Tq;
          any = any || vis[j];
          double a = 0, c = 0;
          for (int k = 0; k < Ds; ++k) {
            a += p.q_std[((std::size_t(b) * H + h) * Tq + i) * Ds + k] *
                 p.k_std[((std::size_t(b) * H + h) * Tk + j) * Ds + k];
          }
          for (int k = 0; k < R; ++k) {
            c += p.k_low[((std::size_t(b) * H + h) * Tq + i) * R + k] *
                 p.q_low[((std::size_t(b) * H + h) * Tk + j) * R + k];
          }
          s[j] = scale * (ws * a + wr * c);
          if (p.spec.bias == BiasKind::kColumn) {
            s[j] += wd * p.bias[(std::size_t(p.bias_batch == 1 ? 0 : b) * H + h) * Tk + j];
          }
        }
        const std::size_t row = (std::size_t(b) * H + h) * Tq + i;
        if (!any) {
          out.lse[row] = -std::numeric_limits<double>::infinity();
          continue;
        }
        double z = 0;
        for (int j = 0; j < Tk; ++j)
          if (vis[j]) z += std::exp(s[j]);
        out.lse[row] = std::log(z);
        for (int j = 0; j < Tk; ++j) {
          if (!vis[j]) continue;
          for (int c = 0; c < Dv; ++c) {
            out.o[row * Dv + c] +=
                std::exp(s[j]) / z * p.v[((std::size_t(b) * H + h) * Tk + j) * Dv + c];
          }
        }
      }
    }
  return out;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(a[i]) || std::isinf(b[i])) {
      CHECK(a[i] == b[i]);
      continue;
    }
    m = std::max(m, std::abs(a[i] - b[i]));
  }
  return m;
}

double loss(const RefProblem& p, const std::vector<double>& d_o) {
  const auto f = rajit::tune::reference_forward(p);
  double l = 0;
  for (std::size_t i = 0; i < d_o.size(); ++i) l += f.o[i] * d_o[i];
  return l;
}

// Central differences of L = sum(O * dO) for every entry of `field`, against `grad`.
void check_gradient(const char* name, RefProblem p, std::vector<double> RefProblem::*field,
                    const std::vector<double>& grad, const std::vector<double>& d_o) {
  CAPTURE(name);
  std::vector<double>& x = p.*field;
  REQUIRE(grad.size() == x.size());
  double grad_scale = 0;
  for (double g : grad) grad_scale = std::max(grad_scale, std::abs(g));
  const double h = 1e-5;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double lp = loss(p, d_o);
    x[i] = x0 - h;
    const double lm = loss(p, d_o);
    x[i] = x0;
    const double fd = (lp - lm) / (2 * h);
    CAPTURE(i);
    CAPTURE(fd);
    CAPTURE(grad[i]);
    CHECK(std::abs(fd - grad[i]) <= 1e-6 * std::max(std::abs(grad[i]), grad_scale) + 1e-10);
  }
}

bool all_finite(const std::vector<double>& v) {
  for (double x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace

TEST_CASE("reference: r=0 without bias is plain softmax attention") {
  // Hand-rolled plain attention, with none of the RA machinery: O = softmax(Q K^T / sqrt(D)) V.
  const int B = 2, H = 3, Tq = 4, Tk = 6, D = 5, Dv = 3;
  RefProblem p = make_problem(B, H, Tq, Tk, D, 0, Dv, false, BiasKind::kNone, 1, 11, false);
  const auto ref = rajit::tune::reference_forward(p);
  REQUIRE(ref.o.size() == std::size_t(B * H * Tq * Dv));
  REQUIRE(ref.lse.size() == std::size_t(B * H * Tq));
  for (int bh = 0; bh < B * H; ++bh)
    for (int i = 0; i < Tq; ++i) {
      double logits[Tk], z = 0;
      for (int j = 0; j < Tk; ++j) {
        double dot = 0;
        for (int c = 0; c < D; ++c) dot += p.q_std[(bh * Tq + i) * D + c] * p.k_std[(bh * Tk + j) * D + c];
        logits[j] = dot / std::sqrt(double(D));
        z += std::exp(logits[j]);
      }
      CHECK(ref.lse[bh * Tq + i] == doctest::Approx(std::log(z)).epsilon(1e-13));
      for (int c = 0; c < Dv; ++c) {
        double o = 0;
        for (int j = 0; j < Tk; ++j) o += std::exp(logits[j]) / z * p.v[(bh * Tk + j) * Dv + c];
        CAPTURE(bh);
        CAPTURE(i);
        CHECK(std::abs(ref.o[(bh * Tq + i) * Dv + c] - o) < 1e-13);
      }
    }
}

TEST_CASE("reference: forward equals the formulas of ra-math.md written out naively") {
  struct Case {
    bool causal;
    BiasKind bias;
    int bias_batch, Tq, Tk;
    double scale;
  };
  const Case cases[] = {{false, BiasKind::kNone, 1, 5, 7, 0},  {true, BiasKind::kNone, 1, 7, 7, 0},
                        {true, BiasKind::kColumn, 1, 5, 7, 0}, {false, BiasKind::kColumn, 2, 6, 3, 0.3},
                        {true, BiasKind::kColumn, 2, 3, 8, 0.7}};
  for (const Case& c : cases) {
    RefProblem p = make_problem(2, 2, c.Tq, c.Tk, 4, 8, 3, c.causal, c.bias, c.bias_batch, 7);
    p.scale = c.scale;
    CAPTURE(c.causal);
    CAPTURE(c.bias_batch);
    CAPTURE(c.Tq);
    CAPTURE(c.Tk);
    const auto ref = rajit::tune::reference_forward(p);
    const auto naive = naive_forward(p);
    CHECK(max_abs_diff(ref.o, naive.o) < 1e-12);
    CHECK(max_abs_diff(ref.lse, naive.lse) < 1e-12);
  }
}

TEST_CASE("reference: the default scale is 1/sqrt(d_std + r)") {
  RefProblem p;
  p.spec = AttentionSpec{56, 8, 64, true, BiasKind::kNone, Dtype::kBf16};
  CHECK(p.effective_scale() == doctest::Approx(0.125).epsilon(1e-15));
  p.scale = 0.5;
  CHECK(p.effective_scale() == 0.5);
}

TEST_CASE("reference: causal visibility is bottom-right aligned") {
  using rajit::tune::is_visible;
  // Tq == Tk: the usual lower triangle.
  CHECK(is_visible(true, 3, 3, 5, 5));
  CHECK_FALSE(is_visible(true, 3, 4, 5, 5));
  // Tq < Tk: the last query sees every key.
  CHECK(is_visible(true, 1, 5, 2, 6));
  CHECK_FALSE(is_visible(true, 0, 5, 2, 6));
  CHECK(is_visible(true, 0, 4, 2, 6));
  // Tq > Tk: the first Tq - Tk queries see nothing.
  CHECK_FALSE(is_visible(true, 1, 0, 5, 3));
  CHECK(is_visible(true, 2, 0, 5, 3));
  CHECK(is_visible(false, 0, 99, 1, 100));
}

TEST_CASE("reference: causal with Tq > Tk gives zero rows and LSE -inf, never NaN") {
  const int Tq = 6, Tk = 3, Dv = 4;
  const RefProblem p = make_problem(2, 2, Tq, Tk, 4, 4, Dv, true, BiasKind::kColumn, 2, 3);
  const auto ref = rajit::tune::reference_forward(p);
  for (int bh = 0; bh < 4; ++bh) {
    for (int i = 0; i < Tq; ++i) {
      CAPTURE(bh);
      CAPTURE(i);
      const double lse = ref.lse[bh * Tq + i];
      if (i < Tq - Tk) {
        CHECK(std::isinf(lse));
        CHECK(lse < 0);
        for (int c = 0; c < Dv; ++c) CHECK(ref.o[(bh * Tq + i) * Dv + c] == 0.0);
      } else {
        CHECK(std::isfinite(lse));
      }
    }
    // Row Tq - Tk sees key 0 alone: O is exactly v_0.
    for (int c = 0; c < Dv; ++c) {
      CHECK(ref.o[(bh * Tq + (Tq - Tk)) * Dv + c] == doctest::Approx(p.v[(bh * Tk) * Dv + c]));
    }
  }
  for (double x : ref.o) CHECK_FALSE(std::isnan(x));
  for (double x : ref.lse) CHECK_FALSE(std::isnan(x));

  // The backward gives no gradient through rows that see nothing, and no NaN.
  std::mt19937_64 rng(5);
  const auto g = rajit::tune::reference_backward(p, random_vec(rng, ref.o.size()));
  for (const auto* v : {&g.dq_std, &g.dk_low, &g.dk_std, &g.dq_low, &g.dv, &g.dbias, &g.dw_std,
                        &g.dw_rec, &g.dw_disc}) {
    CHECK(all_finite(*v));
  }
  for (int bh = 0; bh < 4; ++bh)
    for (int i = 0; i < Tq - Tk; ++i)
      for (int c = 0; c < 4; ++c) {
        CHECK(g.dq_std[(bh * Tq + i) * 4 + c] == 0.0);
        CHECK(g.dk_low[(bh * Tq + i) * 4 + c] == 0.0);
      }
}

TEST_CASE("reference: full-rank reciprocity (q_std=Q, k_low=K, k_std=K, q_low=Q) is symmetric") {
  // With D_std = R = D and w_std = w_rec, s_ij = scale * (Q_i.K_j + K_i.Q_j) = s_ji. Take V to be
  // the identity (Dv = T), so that O = P, and read the logits back as s_ij = log P_ij + LSE_i.
  const int B = 2, H = 2, T = 6, D = 4;
  std::mt19937_64 rng(21);
  const auto Q = random_vec(rng, std::size_t(B * H * T * D));
  const auto K = random_vec(rng, std::size_t(B * H * T * D));
  RefProblem p;
  p.spec = AttentionSpec{D, D, T, false, BiasKind::kNone, Dtype::kBf16};
  p.batch = B;
  p.heads = H;
  p.seqlen_q = p.seqlen_k = T;
  p.q_std = Q;
  p.k_low = K;
  p.k_std = K;
  p.q_low = Q;
  p.w_std = {0.75, 1.25};
  p.w_rec = p.w_std;
  p.v.assign(std::size_t(B * H * T * T), 0.0);
  for (int bh = 0; bh < B * H; ++bh)
    for (int j = 0; j < T; ++j) p.v[(bh * T + j) * T + j] = 1.0;
  const auto ref = rajit::tune::reference_forward(p);
  const double scale = 1.0 / std::sqrt(2.0 * D);
  for (int bh = 0; bh < B * H; ++bh) {
    const double w = p.w_std[bh % H];
    for (int i = 0; i < T; ++i)
      for (int j = 0; j < T; ++j) {
        const double sij = std::log(ref.o[(bh * T + i) * T + j]) + ref.lse[bh * T + i];
        const double sji = std::log(ref.o[(bh * T + j) * T + i]) + ref.lse[bh * T + j];
        double expect = 0;
        for (int c = 0; c < D; ++c) {
          expect += Q[(bh * T + i) * D + c] * K[(bh * T + j) * D + c] +
                    K[(bh * T + i) * D + c] * Q[(bh * T + j) * D + c];
        }
        CAPTURE(bh);
        CAPTURE(i);
        CAPTURE(j);
        CHECK(sij == doctest::Approx(sji).epsilon(1e-12));
        CHECK(sij == doctest::Approx(scale * w * expect).epsilon(1e-12));
      }
  }
  // Swapping the roles of Q and K therefore changes nothing.
  RefProblem swapped = p;
  swapped.q_std = K;
  swapped.k_low = Q;
  swapped.k_std = Q;
  swapped.q_low = K;
  const auto ref2 = rajit::tune::reference_forward(swapped);
  CHECK(max_abs_diff(ref.o, ref2.o) < 1e-14);
  CHECK(max_abs_diff(ref.lse, ref2.lse) < 1e-13);
}

TEST_CASE("reference: folding the reciprocal channels into d_std changes nothing") {
  // [q_std | k_low] . [k_std | q_low] with unit gates is the same contraction of width Ds + R.
  const int B = 2, H = 2, Tq = 5, Tk = 7, Ds = 4, R = 8, Dv = 3;
  RefProblem p = make_problem(B, H, Tq, Tk, Ds, R, Dv, true, BiasKind::kColumn, 1, 9, false);
  RefProblem f = p;
  f.spec.d_std = Ds + R;
  f.spec.r = 0;
  f.k_low.clear();
  f.q_low.clear();
  f.q_std.clear();
  f.k_std.clear();
  for (int row = 0; row < B * H * Tq; ++row) {
    for (int c = 0; c < Ds; ++c) f.q_std.push_back(p.q_std[row * Ds + c]);
    for (int c = 0; c < R; ++c) f.q_std.push_back(p.k_low[row * R + c]);
  }
  for (int row = 0; row < B * H * Tk; ++row) {
    for (int c = 0; c < Ds; ++c) f.k_std.push_back(p.k_std[row * Ds + c]);
    for (int c = 0; c < R; ++c) f.k_std.push_back(p.q_low[row * R + c]);
  }
  const auto a = rajit::tune::reference_forward(p);
  const auto b = rajit::tune::reference_forward(f);
  CHECK(max_abs_diff(a.o, b.o) < 1e-13);
  CHECK(max_abs_diff(a.lse, b.lse) < 1e-13);
}

TEST_CASE("reference: shifting the bias by a constant changes neither O nor any gradient") {
  // ra-math.md: centring the bias is a per-row constant; softmax is invariant and sum_j g_j = 0.
  RefProblem p = make_problem(2, 2, 5, 7, 4, 4, 4, true, BiasKind::kColumn, 1, 17);
  RefProblem q = p;
  for (double& x : q.bias) x += 0.8;
  std::mt19937_64 rng(4);
  const auto d_o = random_vec(rng, std::size_t(2 * 2 * 5 * 4));
  const auto fa = rajit::tune::reference_forward(p), fb = rajit::tune::reference_forward(q);
  CHECK(max_abs_diff(fa.o, fb.o) < 1e-13);
  for (std::size_t i = 0; i < fa.lse.size(); ++i) {
    CHECK(fb.lse[i] - fa.lse[i] == doctest::Approx(0.8 * p.w_disc[(i / 5) % 2]).epsilon(1e-12));
  }
  const auto ga = rajit::tune::reference_backward(p, d_o), gb = rajit::tune::reference_backward(q, d_o);
  CHECK(max_abs_diff(ga.dbias, gb.dbias) < 1e-13);
  CHECK(max_abs_diff(ga.dw_disc, gb.dw_disc) < 1e-12);
  CHECK(max_abs_diff(ga.dq_std, gb.dq_std) < 1e-13);
  CHECK(max_abs_diff(ga.dv, gb.dv) < 1e-13);
}

TEST_CASE("reference: backward matches central finite differences of sum(O * dO)") {
  struct Case {
    const char* name;
    bool causal;
    BiasKind bias;
    int bias_batch, Tq, Tk;
    double scale;
  };
  const Case cases[] = {
      {"full, shared bias", false, BiasKind::kColumn, 1, 5, 7, 0},
      {"full, per-batch bias", false, BiasKind::kColumn, 2, 5, 7, 0.4},
      {"causal, shared bias", true, BiasKind::kColumn, 1, 5, 7, 0},
      {"causal, per-batch bias", true, BiasKind::kColumn, 2, 5, 7, 0},
      {"causal, Tq > Tk, per-batch bias", true, BiasKind::kColumn, 2, 7, 5, 0},
      {"causal, no bias", true, BiasKind::kNone, 1, 7, 7, 0},
  };
  for (const Case& c : cases) {
    SUBCASE(c.name) {
      RefProblem p = make_problem(2, 2, c.Tq, c.Tk, 4, 4, 4, c.causal, c.bias, c.bias_batch,
                                  std::hash<std::string>{}(c.name));
      p.scale = c.scale;
      std::mt19937_64 rng(99);
      const auto d_o = random_vec(rng, std::size_t(2 * 2 * c.Tq * 4));
      const auto g = rajit::tune::reference_backward(p, d_o);
      check_gradient("q_std", p, &RefProblem::q_std, g.dq_std, d_o);
      check_gradient("k_low", p, &RefProblem::k_low, g.dk_low, d_o);
      check_gradient("k_std", p, &RefProblem::k_std, g.dk_std, d_o);
      check_gradient("q_low", p, &RefProblem::q_low, g.dq_low, d_o);
      check_gradient("v", p, &RefProblem::v, g.dv, d_o);
      check_gradient("bias", p, &RefProblem::bias, g.dbias, d_o);
      check_gradient("w_std", p, &RefProblem::w_std, g.dw_std, d_o);
      check_gradient("w_rec", p, &RefProblem::w_rec, g.dw_rec, d_o);
      if (c.bias == BiasKind::kColumn) {
        check_gradient("w_disc", p, &RefProblem::w_disc, g.dw_disc, d_o);
      } else {
        for (double x : g.dw_disc) CHECK(x == 0.0);
      }
    }
  }
}

TEST_CASE("reference: backward rejects dO of the wrong size") {
  const RefProblem p = make_problem(1, 2, 3, 3, 4, 0, 4, false, BiasKind::kNone, 1, 1);
  CHECK_THROWS_AS(rajit::tune::reference_backward(p, std::vector<double>(1 * 2 * 3 * 4 - 1)),
                  std::invalid_argument);
  CHECK_NOTHROW(rajit::tune::reference_backward(p, std::vector<double>(1 * 2 * 3 * 4)));
}
