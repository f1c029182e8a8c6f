/// Keys, parsing and validation messages for AttentionSpec, TileConfig and Arch.
#include "generator/spec.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "templates/attention/limits.cuh"

namespace rajit::gen {
namespace {

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += (out.empty() ? "" : "\n") + l;
  return out;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t pos = s.find(sep, start);
    parts.push_back(s.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return parts;
}

// Parses "<prefix><non-negative integer>" exactly, e.g. ("ds56", "ds") -> 56.
bool parse_prefixed(std::string_view token, std::string_view prefix, int& out) {
  if (token.substr(0, prefix.size()) != prefix || token.size() == prefix.size()) return false;
  const char* first = token.data() + prefix.size();
  const char* last = token.data() + token.size();
  if (*first == '0' && last - first > 1) return false;  // canonical: no leading zeros
  auto [ptr, ec] = std::from_chars(first, last, out);
  return ec == std::errc() && ptr == last && out >= 0;
}

std::string list_ints(const int* first, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += (i ? (i + 1 == n ? " or " : ", ") : "") + std::to_string(first[i]);
  return out;
}

}  // namespace

SpecError::SpecError(std::vector<std::string> problems)
    : std::invalid_argument(join_lines(problems)), problems_(std::move(problems)) {}

std::string_view to_string(BiasKind b) { return b == BiasKind::kNone ? "none" : "column"; }
std::string_view to_string(Dtype d) { return d == Dtype::kFp16 ? "fp16" : "bf16"; }

BiasKind parse_bias(std::string_view s) {
  if (s == "none") return BiasKind::kNone;
  if (s == "column") return BiasKind::kColumn;
  throw SpecError({fmt::format("bias={}: must be none or column", s)});
}
Dtype parse_dtype(std::string_view s) {
  if (s == "fp16") return Dtype::kFp16;
  if (s == "bf16") return Dtype::kBf16;
  throw SpecError({fmt::format("dtype={}: must be fp16 or bf16", s)});
}

std::string AttentionSpec::key() const {
  return fmt::format("fwd.{}.ds{}.r{}.d{}.{}.{}", to_string(dtype), d_std, r, head_dim,
                     causal ? "causal" : "full", bias == BiasKind::kColumn ? "colbias" : "nobias");
}

std::string TileConfig::key() const {
  const char* suffix = mma == MmaKind::kWgmma       ? ".wgmma"
                       : mma == MmaKind::kTma        ? ".tma"
                       : mma == MmaKind::kTmaFolded  ? ".tmafold"
                                                     : "";
  return fmt::format("bm{}.bn{}.w{}.s{}{}", block_m, block_n, warps, stages, suffix);
}

std::string Arch::name() const { return fmt::format("sm_{}{}", cc, arch_specific ? "a" : ""); }
int Arch::max_shared_bytes() const { return attn::max_shared_bytes_for_cc(cc); }

const std::vector<Arch>& supported_archs() {
  static const std::vector<Arch> archs = {{80, false}, {86, false}, {89, false}, {90, false},
                                          {90, true}};
  return archs;
}

AttentionSpec parse_spec_key(std::string_view key) {
  const auto parts = split(key, '.');
  AttentionSpec spec;
  const auto bad = [&] {
    return SpecError({fmt::format(
        "spec key '{}': must look like fwd.bf16.ds56.r8.d64.causal.colbias "
        "(dtype fp16|bf16, causal|full, colbias|nobias)",
        key)});
  };
  if (parts.size() != 7 || parts[0] != "fwd") throw bad();
  if (parts[1] == "fp16") spec.dtype = Dtype::kFp16;
  else if (parts[1] == "bf16") spec.dtype = Dtype::kBf16;
  else throw bad();
  if (!parse_prefixed(parts[2], "ds", spec.d_std) || !parse_prefixed(parts[3], "r", spec.r) ||
      !parse_prefixed(parts[4], "d", spec.head_dim)) {
    throw bad();
  }
  if (parts[5] == "causal") spec.causal = true;
  else if (parts[5] == "full") spec.causal = false;
  else throw bad();
  if (parts[6] == "colbias") spec.bias = BiasKind::kColumn;
  else if (parts[6] == "nobias") spec.bias = BiasKind::kNone;
  else throw bad();
  return spec;
}

TileConfig parse_tile_key(std::string_view key) {
  const auto parts = split(key, '.');
  TileConfig t;
  MmaKind kind = MmaKind::kSync;
  if (parts.size() == 5) {
    if (parts[4] == "wgmma") kind = MmaKind::kWgmma;
    else if (parts[4] == "tma") kind = MmaKind::kTma;
    else if (parts[4] == "tmafold") kind = MmaKind::kTmaFolded;
  }
  if ((parts.size() != 4 && kind == MmaKind::kSync) || !parse_prefixed(parts[0], "bm", t.block_m) ||
      !parse_prefixed(parts[1], "bn", t.block_n) || !parse_prefixed(parts[2], "w", t.warps) ||
      !parse_prefixed(parts[3], "s", t.stages)) {
    throw SpecError({fmt::format(
        "tile key '{}': must look like bm128.bn64.w4.s2 (mma.sync) or bm128.bn128.w8.s2.wgmma "
        "(or .tma / .tmafold)",
        key)});
  }
  t.mma = kind;
  return t;
}

Arch parse_arch(std::string_view name) {
  for (const Arch& a : supported_archs()) {
    if (a.name() == name) return a;
  }
  std::string allowed;
  for (const Arch& a : supported_archs()) allowed += (allowed.empty() ? "" : ", ") + a.name();
  throw SpecError({fmt::format("arch={}: must be one of {}", name, allowed)});
}

std::vector<std::string> validate(const AttentionSpec& s) {
  std::vector<std::string> out;
  const unsigned bad = attn::check_spec(s.d_std, s.r, s.head_dim);
  if (bad & attn::kBadDStd) {
    out.push_back(fmt::format("d_std={}: must be a multiple of {} in [{}, {}]", s.d_std,
                              attn::kChannelMultiple, attn::kChannelMultiple, attn::kMaxDStd));
  }
  if (bad & attn::kBadR) {
    out.push_back(fmt::format("r={}: must be a multiple of {} in [0, {}]", s.r,
                              attn::kChannelMultiple, attn::kMaxR));
  }
  if (bad & attn::kBadHeadDim) {
    out.push_back(fmt::format("head_dim={}: must be one of {}", s.head_dim,
                              list_ints(attn::kHeadDims, std::size(attn::kHeadDims))));
  }
  if (bad & attn::kBadContraction) {
    out.push_back(fmt::format("d_std+r={}: must be at most {} (the score contraction width)",
                              s.d_std + s.r, attn::kMaxContraction));
  }
  return out;
}

namespace {

void validate_wgmma(std::vector<std::string>& out, const AttentionSpec& s, const TileConfig& t,
                    int max_shared_bytes) {
  const unsigned bad =
      is_tma(t.mma)
          ? attn::check_tma_tile(s.d_std, s.r, s.head_dim, t.block_m, t.block_n, t.warps,
                                 t.stages, s.bias == BiasKind::kColumn,
                                 t.mma == MmaKind::kTmaFolded, max_shared_bytes)
          : attn::check_wgmma_tile(s.d_std, s.r, s.head_dim, t.block_m, t.block_n, t.warps,
                                   t.stages, max_shared_bytes);
  if (bad & attn::kBadWgmmaShape) {
    out.push_back(fmt::format(
        "tile {}: a wgmma tile needs block_m in {{{}}}, block_n in {{{}}} and warps = block_m / 16 "
        "(one warpgroup per 64 rows)",
        t.key(), list_ints(attn::kWgmmaBlockMs, std::size(attn::kWgmmaBlockMs)),
        list_ints(attn::kWgmmaBlockNs, std::size(attn::kWgmmaBlockNs))));
  }
  if (bad & attn::kBadWgmmaStages) {
    out.push_back(fmt::format("stages={}: wgmma tiles need {} or {} (two key tiles in use while "
                              "the others load)",
                              t.stages, attn::kWgmmaMinStages, attn::kWgmmaMaxStages));
  }
  if (bad & attn::kBadWgmmaHeadDim) {
    out.push_back(fmt::format("head_dim={}: wgmma tiles support head_dim {}; use an mma.sync tile",
                              s.head_dim,
                              list_ints(attn::kWgmmaHeadDims, std::size(attn::kWgmmaHeadDims))));
  }
  if (bad & attn::kBadSharedMemory) {
    out.push_back(fmt::format("tile {}: needs {} bytes of shared memory, the device allows {} per "
                              "block",
                              t.key(), forward_shared_bytes(s, t), max_shared_bytes));
  }
  if (bad & attn::kBadRegisters) {
    out.push_back(fmt::format(
        "tile {}: {} accumulator registers per thread ({} threads) do not fit: at most {} S+O "
        "registers per thread and {} registers per SM",
        t.key(), attn::wgmma_fwd_registers(s.head_dim, t.block_n), t.warps * 32,
        attn::kWgmmaMaxAccumulators, attn::kWgmmaRegisterFile));
  }
}

}  // namespace

std::vector<std::string> validate(const AttentionSpec& s, const TileConfig& t,
                                  int max_shared_bytes) {
  std::vector<std::string> out = validate(s);
  if (is_hopper(t.mma)) {
    validate_wgmma(out, s, t, max_shared_bytes);
    return out;
  }
  const unsigned bad = attn::check_tile(s.d_std, s.r, s.head_dim, t.block_m, t.block_n, t.warps,
                                        t.stages, max_shared_bytes);
  if (bad & attn::kBadBlockM) {
    out.push_back(fmt::format("block_m={}: must be {}", t.block_m,
                              list_ints(attn::kBlockMs, std::size(attn::kBlockMs))));
  }
  if (bad & attn::kBadBlockN) {
    out.push_back(fmt::format("block_n={}: must be {}", t.block_n,
                              list_ints(attn::kBlockNs, std::size(attn::kBlockNs))));
  }
  if (bad & attn::kBadWarps) {
    out.push_back(fmt::format("warps={}: must be {}", t.warps,
                              list_ints(attn::kWarpCounts, std::size(attn::kWarpCounts))));
  }
  if (bad & attn::kBadStages) {
    out.push_back(fmt::format("stages={}: must be in [{}, {}]", t.stages, attn::kMinStages,
                              attn::kMaxStages));
  }
  if (bad & attn::kBadRowsPerWarp) {
    out.push_back(fmt::format(
        "block_m={} with warps={}: block_m must be 16 * warps * k with k in [1, {}]", t.block_m,
        t.warps, attn::kMaxRowTilesPerWarp));
  }
  if (bad & attn::kBadSharedMemory) {
    out.push_back(fmt::format(
        "tile {}: needs {} bytes of shared memory, the device allows {} per block", t.key(),
        attn::fwd_shared_bytes(s.d_std, s.r, s.head_dim, t.block_m, t.block_n, t.stages),
        max_shared_bytes));
  }
  if (bad & attn::kBadRegisters) {
    out.push_back(fmt::format(
        "tile {}: accumulators need {} registers per thread, at most {} are allowed", t.key(),
        attn::fwd_accumulator_registers(s.d_std, s.r, s.head_dim, t.block_m, t.block_n, t.warps),
        attn::kRegisterBudget));
  }
  return out;
}

void require_valid(const AttentionSpec& s) {
  if (auto problems = validate(s); !problems.empty()) throw SpecError(std::move(problems));
}
void require_valid(const AttentionSpec& s, const TileConfig& t, int max_shared_bytes) {
  if (auto problems = validate(s, t, max_shared_bytes); !problems.empty()) {
    throw SpecError(std::move(problems));
  }
}

std::vector<TileConfig> tile_grid(bool with_wgmma) {
  std::vector<TileConfig> out;
  for (int bm : attn::kBlockMs)
    for (int bn : attn::kBlockNs)
      for (int w : attn::kWarpCounts)
        for (int st = attn::kMinStages; st <= attn::kMaxStages; ++st) out.push_back({bm, bn, w, st});
  if (!with_wgmma) return out;
  for (int bm : attn::kWgmmaBlockMs)
    for (int bn : attn::kWgmmaBlockNs)
      for (int st = attn::kWgmmaMinStages; st <= attn::kWgmmaMaxStages; ++st) {
        out.push_back({bm, bn, bm / 16, st, MmaKind::kWgmma});
      }
  return out;
}

std::vector<TileConfig> valid_tiles(const AttentionSpec& s, int max_shared_bytes,
                                    bool with_wgmma) {
  std::vector<TileConfig> out;
  if (!validate(s).empty()) return out;
  for (const TileConfig& t : tile_grid(with_wgmma)) {
    if (validate(s, t, max_shared_bytes).empty()) out.push_back(t);
  }
  return out;
}

bool runs_on(const TileConfig& t, int cc) { return t.mma == MmaKind::kSync || cc == 90; }

int forward_shared_bytes(const AttentionSpec& s, const TileConfig& t) {
  switch (t.mma) {
    case MmaKind::kSync:
      return attn::fwd_shared_bytes(s.d_std, s.r, s.head_dim, t.block_m, t.block_n, t.stages);
    case MmaKind::kWgmma:
      return attn::wgmma_fwd_shared_bytes(s.d_std, s.r, s.head_dim, t.block_m, t.block_n,
                                          t.stages);
    case MmaKind::kTma:
    case MmaKind::kTmaFolded:
      return attn::tma_fwd_shared_bytes(s.d_std, s.r, s.head_dim, t.block_m, t.block_n, t.stages,
                                        s.bias == BiasKind::kColumn,
                                        t.mma == MmaKind::kTmaFolded);
  }
  return 0;
}

std::string entry_name(const AttentionSpec& s, const TileConfig& t) {
  std::string name = "rajit_" + s.key() + "_" + t.key();
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

}  // namespace rajit::gen
