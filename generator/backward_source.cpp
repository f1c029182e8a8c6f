/// Fills the backward shims' placeholders and turns the backward rules' bits into messages.
#include "generator/backward_source.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "generator/render.hpp"
#include "templates/attention/bwd_limits.cuh"

namespace rajit::gen {
namespace {

// The dK/dV kernel's Hopper tiles (is_hopper): wgmma fed by cp.async, or by TMA (.tmafold: the
// query side stored as folded rows [q_std | k_low]; .tma: q_std by TMA, k_low copied over its zero
// columns); all have the same shapes and shared memory.
int shared_bytes(const AttentionSpec& s, BackwardKernel k, const TileConfig& t) {
  if (is_hopper(t.mma) && k != BackwardKernel::kAux) {
    return attn::bwd_dkv_wgmma_shared_bytes(s.d_std, s.r, s.head_dim, t.block_n, t.stages,
                                            k == BackwardKernel::kDkvAtomicDq,
                                            s.bias != BiasKind::kNone);
  }
  switch (k) {
    case BackwardKernel::kDkv:
    case BackwardKernel::kDkvAtomicDq:
      return attn::bwd_dkv_shared_bytes(s.d_std, s.r, s.head_dim, t.block_m, t.block_n, t.stages,
                                        k == BackwardKernel::kDkvAtomicDq);
    case BackwardKernel::kDq:
      return attn::bwd_dq_shared_bytes(s.d_std, s.r, s.head_dim, t.block_m, t.block_n, t.stages);
    case BackwardKernel::kAux: return 0;
  }
  return 0;
}

unsigned tile_bits(const AttentionSpec& s, BackwardKernel k, const TileConfig& t, int max_shared) {
  if (is_hopper(t.mma)) {
    // The deterministic dQ kernel has no wgmma family: every field of its tile is wrong.
    if (k == BackwardKernel::kDq) {
      return attn::kBwdBadBlockM | attn::kBwdBadBlockN | attn::kBwdBadWarps | attn::kBwdBadStages;
    }
    return attn::check_bwd_dkv_wgmma_tile(s.d_std, s.r, s.head_dim, t.block_m, t.block_n, t.warps,
                                          t.stages, k == BackwardKernel::kDkvAtomicDq,
                                          s.bias != BiasKind::kNone, max_shared);
  }
  if (k == BackwardKernel::kDq) {
    return attn::check_bwd_dq_tile(s.d_std, s.r, s.head_dim, t.block_m, t.block_n, t.warps,
                                   t.stages, max_shared);
  }
  return attn::check_bwd_dkv_tile(s.d_std, s.r, s.head_dim, t.block_m, t.block_n, t.warps, t.stages,
                                  k == BackwardKernel::kDkvAtomicDq, max_shared);
}

// "fwd.bf16.ds56..." -> "<family>.bf16.ds56..."
std::string family_key(const AttentionSpec& s, BackwardKernel k) {
  const std::string key = s.key();
  return std::string(to_string(k)) + key.substr(key.find('.'));
}

}  // namespace

std::string_view to_string(BackwardKernel k) {
  switch (k) {
    case BackwardKernel::kDkv: return "bwddkv";
    case BackwardKernel::kDkvAtomicDq: return "bwddkvatomic";
    case BackwardKernel::kDq: return "bwddq";
    case BackwardKernel::kAux: return "bwdaux";
  }
  return "?";
}

std::vector<std::string> validate_backward(const AttentionSpec& s) {
  std::vector<std::string> out = validate(s);
  if (!out.empty()) return out;
  const unsigned bad = attn::check_bwd_spec(s.d_std, s.r, s.head_dim);
  if (bad & attn::kBwdBadHeadDim) {
    out.push_back(fmt::format("head_dim={}: the backward supports head_dim 32, 64, 96 or 128",
                              s.head_dim));
  }
  if (bad & attn::kBwdBadContraction) {
    out.push_back(fmt::format(
        "d_std+r={}: the backward supports d_std + r <= {} (padded to a multiple of 16)",
        s.d_std + s.r, attn::kBwdMaxContraction));
  }
  return out;
}

std::vector<std::string> validate_backward(const AttentionSpec& s, BackwardKernel k,
                                           const TileConfig& t, int max_shared_bytes) {
  std::vector<std::string> out = validate_backward(s);
  if (k == BackwardKernel::kAux || !out.empty()) return out;
  const unsigned bad = tile_bits(s, k, t, max_shared_bytes);
  const bool dq = k == BackwardKernel::kDq;
  if (is_hopper(t.mma) && dq) {
    out.push_back(fmt::format("tile {}: the {} kernel has no wgmma tiles (drop .wgmma)", t.key(),
                              to_string(k)));
    return out;
  }
  // What each tile field may be, in the words of the tile's family.
  struct Allowed {
    std::string who, take, need, use, block_m, block_n, warps, stages;
  };
  static_assert(attn::kBwdWgmmaMinStages == attn::kBwdWgmmaMaxStages, "message names one value");
  const Allowed a =
      is_hopper(t.mma)
          ? Allowed{fmt::format("wgmma {} tiles", to_string(k)), "take", "need", "use",
                    fmt::format("{}", attn::kBwdWgmmaBlockM), "64 or 128", "block_n / 16",
                    fmt::format("{} (double-buffered query tiles)", attn::kBwdWgmmaMinStages)}
          : Allowed{fmt::format("the {} kernel", to_string(k)), "takes", "needs", "uses",
                    dq ? "64 or 128" : "32 or 64 (16 only where 32 exceeds the register budget)",
                    dq ? "32 or 64" : "64 or 128",
                    dq ? "block_m / 16" : "block_n / 16, or 8 with block_n 64", "2"};
  if (bad & attn::kBwdBadBlockM) {
    out.push_back(fmt::format("block_m={}: {} {} {}", t.block_m, a.who, a.take, a.block_m));
  }
  if (bad & attn::kBwdBadBlockN) {
    out.push_back(fmt::format("block_n={}: {} {} {}", t.block_n, a.who, a.take, a.block_n));
  }
  if (bad & attn::kBwdBadWarps) {
    out.push_back(fmt::format("warps={}: {} {} warps = {}", t.warps, a.who, a.need, a.warps));
  }
  if (bad & attn::kBwdBadStages) {
    out.push_back(fmt::format("stages={}: {} {} {}", t.stages, a.who, a.use, a.stages));
  }
  if (bad & attn::kBwdBadWgmmaWidth) {
    out.push_back(fmt::format("tile {}: wgmma {} tiles need head_dim and d_std + r (padded to 16) "
                              "both 64 or 128; here {} and {} (use an mma.sync tile)",
                              t.key(), to_string(k), s.head_dim,
                              attn::padded_contraction(s.d_std, s.r)));
  }
  if (bad & attn::kBwdBadSharedMemory) {
    out.push_back(fmt::format("tile {}: the {} kernel needs {} bytes of shared memory, the device "
                              "allows {} per block",
                              t.key(), to_string(k), shared_bytes(s, k, t), max_shared_bytes));
  }
  if (bad & attn::kBwdBadRegisters) {
    out.push_back(fmt::format("tile {}: the {} kernel's accumulators would need more than {} "
                              "registers per thread",
                              t.key(), to_string(k),
                              is_hopper(t.mma) ? attn::kBwdWgmmaRegisterBudget : attn::kBwdRegisterBudget));
  }
  return out;
}

std::vector<TileConfig> valid_backward_tiles(const AttentionSpec& s, BackwardKernel k,
                                             int max_shared_bytes, bool with_wgmma) {
  std::vector<TileConfig> out;
  if (k == BackwardKernel::kAux || !validate_backward(s).empty()) return out;
  for (int bm : {16, 32, 64, 128})
    for (int bn : {32, 64, 128})
      for (int w : {2, 4, 8})
        for (int st : {2}) {
          const TileConfig t{bm, bn, w, st};
          if (tile_bits(s, k, t, max_shared_bytes) == 0) out.push_back(t);
        }
  if (!with_wgmma || k == BackwardKernel::kDq) return out;
  for (int bn : {64, 128})
    for (int st = attn::kBwdWgmmaMinStages; st <= attn::kBwdWgmmaMaxStages; ++st) {
      const TileConfig t{attn::kBwdWgmmaBlockM, bn, bn / 16, st, MmaKind::kWgmma};
      if (tile_bits(s, k, t, max_shared_bytes) == 0) out.push_back(t);
    }
  return out;
}

GeneratedSource generate_backward(const AttentionSpec& s, BackwardKernel k, const TileConfig& t) {
  if (auto problems = validate_backward(s, k, t, 1 << 30); !problems.empty()) {
    throw SpecError(std::move(problems));
  }
  GeneratedSource out;
  out.readable_key = k == BackwardKernel::kAux ? family_key(s, k) : family_key(s, k) + "." + t.key();
  out.entry = "rajit_" + out.readable_key;
  std::replace(out.entry.begin(), out.entry.end(), '.', '_');
  out.options = {"--std=c++17", "--device-as-default-execution-space"};
  out.template_set_hash = template_set_hash();
  out.threads = k == BackwardKernel::kAux ? attn::kAuxThreadsHost : t.warps * 32;
  out.shared_bytes = shared_bytes(s, k, t);

  std::string options_text;
  for (const auto& o : out.options) options_text += (options_text.empty() ? "" : " ") + o;
  Values values = {
      {"RAJIT_VERSION", Value::comment(RAJIT_VERSION)},
      {"KERNEL_KEY", Value::comment(out.readable_key)},
      {"NVRTC_OPTIONS", Value::comment(options_text)},
      {"ELEMENT", Value::identifier(s.dtype == Dtype::kBf16 ? "Bf16" : "Fp16")},
      {"D_STD", Value::integer(s.d_std)},
      {"R", Value::integer(s.r)},
      {"HEAD_DIM", Value::integer(s.head_dim)},
  };
  std::string shim_path;
  if (k == BackwardKernel::kAux) {
    shim_path = "attention/bwd_aux_entry.cu.in";
    values.emplace("ENTRY_PREPROCESS", Value::identifier(out.entry + "_preprocess"));
    values.emplace("ENTRY_CONVERT", Value::identifier(out.entry + "_convert"));
    values.emplace("ENTRY_FINALIZE", Value::identifier(out.entry + "_finalize"));
  } else {
    shim_path = k == BackwardKernel::kDq ? "attention/bwd_dq_entry.cu.in"
                : is_tma(t.mma)          ? "attention/bwd_dkv_tma_entry.cu.in"
                : is_hopper(t.mma)       ? "attention/bwd_dkv_wgmma_entry.cu.in"
                                         : "attention/bwd_dkv_entry.cu.in";
    if (!is_hopper(t.mma)) {  // wgmma tiles: block_m is fixed and warps = block_n / 16
      values.emplace("BLOCK_M", Value::integer(t.block_m));
      values.emplace("WARPS", Value::integer(t.warps));
    }
    values.emplace("BLOCK_N", Value::integer(t.block_n));
    values.emplace("STAGES", Value::integer(t.stages));
    values.emplace("MASK_POLICY", Value::identifier(s.causal ? "CausalMask" : "NoMask"));
    values.emplace("BIAS_POLICY",
                   Value::identifier(s.bias == BiasKind::kColumn ? "ColumnBias" : "NoBias"));
    values.emplace("ENTRY", Value::identifier(out.entry));
    if (k != BackwardKernel::kDq) {
      values.emplace("ATOMIC_DQ",
                     Value::identifier(k == BackwardKernel::kDkvAtomicDq ? "true" : "false"));
    }
    if (is_tma(t.mma) && k != BackwardKernel::kDq) {
      values.emplace("TMA_SEPARATE", Value::identifier(t.mma == MmaKind::kTma ? "true" : "false"));
    }
  }
  const std::string shim = render(template_text(shim_path), values);
  out.text = fmt::format("// rajit {} | templates {} | {}\n", RAJIT_VERSION, out.template_set_hash,
                         out.readable_key) +
             flatten(shim, shim_path.substr(0, shim_path.size() - 3));
  return out;
}

}  // namespace rajit::gen
