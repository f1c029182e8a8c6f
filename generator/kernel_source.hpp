/// generate_forward(): one (spec, tile) -> a self-contained CUDA source plus its NVRTC options.
#pragma once
#include <string>
#include <vector>

#include "generator/spec.hpp"

namespace rajit::gen {

/// What NVRTC (or `nvcc -cubin`) needs to build one kernel. Pure data; no I/O.
struct GeneratedSource {
  std::string entry;                 ///< extern "C" kernel name (procedural, S12)
  std::string readable_key;          ///< spec key + "." + tile key; cache-file prefix
  std::string text;                  ///< flattened source: no #include, no toolkit header
  std::vector<std::string> options;  ///< NVRTC options besides --gpu-architecture
  std::string template_set_hash;
  int threads = 0;                   ///< block size
  int shared_bytes = 0;              ///< dynamic shared memory per block
};

/// Renders the forward shim for (spec, tile) and flattens it. Deterministic: equal inputs give
/// byte-identical text (golden tests rely on it).
/// Throws: SpecError if the spec or tile is invalid (shared memory is not checked here: that
/// depends on the device, see validate()).
GeneratedSource generate_forward(const AttentionSpec& spec, const TileConfig& tile);

}  // namespace rajit::gen
