/// Fills the forward shim's placeholders from a spec and tile, then flattens the result.
#include "generator/kernel_source.hpp"

#include <fmt/format.h>

#include "generator/render.hpp"
#include "templates/attention/limits.cuh"

namespace rajit::gen {

GeneratedSource generate_forward(const AttentionSpec& spec, const TileConfig& tile) {
  // Shared memory is device-specific; every other rule is checked here, before any rendering.
  require_valid(spec, tile, /*max_shared_bytes=*/1 << 30);
  GeneratedSource out;
  out.entry = entry_name(spec, tile);
  out.readable_key = spec.key() + "." + tile.key();
  out.options = {"--std=c++17", "--device-as-default-execution-space"};
  out.template_set_hash = template_set_hash();
  out.threads = tile.warps * 32;
  const bool hopper = is_hopper(tile.mma);
  out.shared_bytes = forward_shared_bytes(spec, tile);

  std::string options_text;
  for (const auto& o : out.options) options_text += (options_text.empty() ? "" : " ") + o;
  const Values values = {
      {"RAJIT_VERSION", Value::comment(RAJIT_VERSION)},
      {"KERNEL_KEY", Value::comment(out.readable_key)},
      {"NVRTC_OPTIONS", Value::comment(options_text)},
      {"ELEMENT", Value::identifier(spec.dtype == Dtype::kBf16 ? "Bf16" : "Fp16")},
      {"D_STD", Value::integer(spec.d_std)},
      {"R", Value::integer(spec.r)},
      {"HEAD_DIM", Value::integer(spec.head_dim)},
      {"BLOCK_M", Value::integer(tile.block_m)},
      {"BLOCK_N", Value::integer(tile.block_n)},
      {"WARPS", Value::integer(tile.warps)},
      {"STAGES", Value::integer(tile.stages)},
      {"MASK_POLICY", Value::identifier(spec.causal ? "CausalMask" : "NoMask")},
      {"BIAS_POLICY", Value::identifier(spec.bias == BiasKind::kColumn ? "ColumnBias" : "NoBias")},
      {"ENTRY", Value::identifier(out.entry)},
      {"FOLDED", Value::identifier(tile.mma == MmaKind::kTmaFolded ? "true" : "false")},
  };
  Values shim_values = values;
  if (hopper) shim_values.erase("WARPS");  // implied by block_m: one warpgroup per 64 rows
  if (!is_tma(tile.mma)) shim_values.erase("FOLDED");
  const std::string shim_base = is_tma(tile.mma)            ? "attention/fwd_tma_entry.cu"
                                : tile.mma == MmaKind::kWgmma ? "attention/fwd_wgmma_entry.cu"
                                                              : "attention/fwd_entry.cu";
  const std::string shim = render(template_text(shim_base + ".in"), shim_values);
  out.text = fmt::format("// rajit {} | templates {} | {}\n", RAJIT_VERSION, out.template_set_hash,
                         out.readable_key) +
             flatten(shim, shim_base);
  return out;
}

}  // namespace rajit::gen
