/// Direct float64 evaluation of ra-math.md's formulas: slow, simple, and the ground truth.
#include "tuner/reference.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>

namespace rajit::tune {
namespace {

struct Dims {
  int B, H, Tq, Tk, Ds, R, Dv;
  std::size_t row(int b, int h, int t, int rows, int width) const {
    return ((static_cast<std::size_t>(b) * H + h) * rows + t) * width;
  }
};

Dims dims_of(const RefProblem& p) {
  return {p.batch, p.heads, p.seqlen_q, p.seqlen_k, p.spec.d_std, p.spec.r, p.spec.head_dim};
}

double gate(const std::vector<double>& g, int h) { return g.empty() ? 1.0 : g[h]; }

// Logits s_i. for one (b, h, i), -inf where masked. Returns the row's max.
double logits_row(const RefProblem& p, const Dims& d, int b, int h, int i, std::vector<double>& s) {
  const double scale = p.effective_scale();
  const double w_std = gate(p.w_std, h), w_rec = gate(p.w_rec, h), w_disc = gate(p.w_disc, h);
  const bool has_bias = p.spec.bias == gen::BiasKind::kColumn;
  const double* qs = &p.q_std[d.row(b, h, i, d.Tq, d.Ds)];
  const double* kl = d.R ? &p.k_low[d.row(b, h, i, d.Tq, d.R)] : nullptr;
  double mx = -std::numeric_limits<double>::infinity();
  for (int j = 0; j < d.Tk; ++j) {
    if (!is_visible(p.spec.causal, i, j, d.Tq, d.Tk)) {
      s[j] = -std::numeric_limits<double>::infinity();
      continue;
    }
    const double* ks = &p.k_std[d.row(b, h, j, d.Tk, d.Ds)];
    double dot_std = 0, dot_rec = 0;
    for (int c = 0; c < d.Ds; ++c) dot_std += qs[c] * ks[c];
    if (d.R) {
      const double* ql = &p.q_low[d.row(b, h, j, d.Tk, d.R)];
      for (int c = 0; c < d.R; ++c) dot_rec += kl[c] * ql[c];
    }
    double x = scale * (w_std * dot_std + w_rec * dot_rec);
    if (has_bias) {
      const int bb = p.bias_batch == 1 ? 0 : b;
      x += w_disc * p.bias[(static_cast<std::size_t>(bb) * d.H + h) * d.Tk + j];
    }
    s[j] = x;
    mx = std::max(mx, x);
  }
  return mx;
}

}  // namespace

double RefProblem::effective_scale() const {
  return scale != 0 ? scale : 1.0 / std::sqrt(static_cast<double>(spec.d_std + spec.r));
}

bool is_visible(bool causal, int i, int j, int seqlen_q, int seqlen_k) {
  return !causal || j <= i + (seqlen_k - seqlen_q);
}

RefForward reference_forward(const RefProblem& p) {
  const Dims d = dims_of(p);
  RefForward out;
  out.o.assign(static_cast<std::size_t>(d.B) * d.H * d.Tq * d.Dv, 0.0);
  out.lse.assign(static_cast<std::size_t>(d.B) * d.H * d.Tq, 0.0);
  std::vector<double> s(d.Tk);
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < d.H; ++h)
      for (int i = 0; i < d.Tq; ++i) {
        const double mx = logits_row(p, d, b, h, i, s);
        double* o = &out.o[d.row(b, h, i, d.Tq, d.Dv)];
        double& lse = out.lse[(static_cast<std::size_t>(b) * d.H + h) * d.Tq + i];
        if (std::isinf(mx)) {  // no visible key
          lse = -std::numeric_limits<double>::infinity();
          continue;
        }
        double sum = 0;
        for (int j = 0; j < d.Tk; ++j) sum += std::exp(s[j] - mx);
        for (int j = 0; j < d.Tk; ++j) {
          const double pj = std::exp(s[j] - mx) / sum;
          if (pj == 0) continue;
          const double* v = &p.v[d.row(b, h, j, d.Tk, d.Dv)];
          for (int c = 0; c < d.Dv; ++c) o[c] += pj * v[c];
        }
        lse = mx + std::log(sum);
      }
  return out;
}

RefGradients reference_backward(const RefProblem& p, const std::vector<double>& d_o) {
  const Dims d = dims_of(p);
  if (d_o.size() != static_cast<std::size_t>(d.B) * d.H * d.Tq * d.Dv) {
    throw std::invalid_argument("reference_backward: dO must have B*H*Tq*head_dim elements");
  }
  const RefForward fwd = reference_forward(p);
  const double scale = p.effective_scale();
  const bool has_bias = p.spec.bias == gen::BiasKind::kColumn;
  RefGradients g;
  g.dq_std.assign(p.q_std.size(), 0.0);
  g.dk_low.assign(p.k_low.size(), 0.0);
  g.dk_std.assign(p.k_std.size(), 0.0);
  g.dq_low.assign(p.q_low.size(), 0.0);
  g.dv.assign(p.v.size(), 0.0);
  g.dw_std.assign(d.H, 0.0);
  g.dw_rec.assign(d.H, 0.0);
  g.dw_disc.assign(d.H, 0.0);
  g.dbias.assign(p.bias.size(), 0.0);
  std::vector<double> s(d.Tk), prob(d.Tk), ds(d.Tk);
  for (int b = 0; b < d.B; ++b)
    for (int h = 0; h < d.H; ++h) {
      const double w_std = gate(p.w_std, h), w_rec = gate(p.w_rec, h), w_disc = gate(p.w_disc, h);
      const int bb = p.bias_batch == 1 ? 0 : b;
      for (int i = 0; i < d.Tq; ++i) {
        const double lse = fwd.lse[(static_cast<std::size_t>(b) * d.H + h) * d.Tq + i];
        if (std::isinf(lse)) continue;  // no visible key: O = 0 is constant, no gradient
        logits_row(p, d, b, h, i, s);
        const double* o = &fwd.o[d.row(b, h, i, d.Tq, d.Dv)];
        const double* dout = &d_o[d.row(b, h, i, d.Tq, d.Dv)];
        double delta = 0;
        for (int c = 0; c < d.Dv; ++c) delta += dout[c] * o[c];
        const double* qs = &p.q_std[d.row(b, h, i, d.Tq, d.Ds)];
        const double* kl = d.R ? &p.k_low[d.row(b, h, i, d.Tq, d.R)] : nullptr;
        double* dqs = &g.dq_std[d.row(b, h, i, d.Tq, d.Ds)];
        double* dkl = d.R ? &g.dk_low[d.row(b, h, i, d.Tq, d.R)] : nullptr;
        for (int j = 0; j < d.Tk; ++j) {
          const double pj = std::isinf(s[j]) ? 0.0 : std::exp(s[j] - lse);
          if (pj == 0) continue;
          const double* v = &p.v[d.row(b, h, j, d.Tk, d.Dv)];
          double* dv = &g.dv[d.row(b, h, j, d.Tk, d.Dv)];
          double dp = 0;
          for (int c = 0; c < d.Dv; ++c) {
            dp += dout[c] * v[c];
            dv[c] += pj * dout[c];
          }
          const double dsij = pj * (dp - delta);
          const double* ks = &p.k_std[d.row(b, h, j, d.Tk, d.Ds)];
          double* dks = &g.dk_std[d.row(b, h, j, d.Tk, d.Ds)];
          double dot_std = 0;
          for (int c = 0; c < d.Ds; ++c) {
            dqs[c] += scale * w_std * dsij * ks[c];
            dks[c] += scale * w_std * dsij * qs[c];
            dot_std += qs[c] * ks[c];
          }
          g.dw_std[h] += scale * dsij * dot_std;
          if (d.R) {
            const double* ql = &p.q_low[d.row(b, h, j, d.Tk, d.R)];
            double* dql = &g.dq_low[d.row(b, h, j, d.Tk, d.R)];
            double dot_rec = 0;
            for (int c = 0; c < d.R; ++c) {
              dkl[c] += scale * w_rec * dsij * ql[c];
              dql[c] += scale * w_rec * dsij * kl[c];
              dot_rec += kl[c] * ql[c];
            }
            g.dw_rec[h] += scale * dsij * dot_rec;
          }
          if (has_bias) {
            const std::size_t bi = (static_cast<std::size_t>(bb) * d.H + h) * d.Tk + j;
            g.dbias[bi] += w_disc * dsij;
            g.dw_disc[h] += p.bias[bi] * dsij;
          }
        }
      }
    }
  return g;
}

}  // namespace rajit::tune
