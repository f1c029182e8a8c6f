/// AttentionSpec (what is computed) and TileConfig (how), their canonical keys and validation.
#pragma once
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace rajit::gen {

/// Raised for a spec, tile, arch or key that is not valid; what() lists every bad field with the
/// values it may take, one per line.
class SpecError : public std::invalid_argument {
 public:
  explicit SpecError(std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

enum class BiasKind { kNone, kColumn };
enum class Dtype { kFp16, kBf16 };

std::string_view to_string(BiasKind);
std::string_view to_string(Dtype);
BiasKind parse_bias(std::string_view);  ///< "none" | "column"; Throws: SpecError
Dtype parse_dtype(std::string_view);    ///< "fp16" | "bf16"; Throws: SpecError

/// The RA function (ra-math.md): contraction widths, value width, mask, bias and element type.
struct AttentionSpec {
  int d_std = 64;
  int r = 0;
  int head_dim = 64;
  bool causal = true;
  BiasKind bias = BiasKind::kNone;
  Dtype dtype = Dtype::kBf16;

  /// Canonical key, e.g. "fwd.bf16.ds56.r8.d64.causal.colbias"; parse_spec_key() inverts it.
  std::string key() const;
  friend bool operator==(const AttentionSpec&, const AttentionSpec&) = default;
};

/// Which kernel family a forward tile uses: mma.sync (every arch from sm_80), Hopper's warpgroup
/// MMA fed by cp.async (sm_90a only; one warpgroup of 4 warps per 64 query rows), or the same
/// MMA fed by TMA (sm_90a; attention/fwd_tma.cuh), with the key side read as separate operands
/// or as folded rows (q_low stored right after k_std, k_low right after q_std). The TMA kinds
/// have the wgmma tile shapes; forward() picks them when the call's tensors allow TMA.
enum class MmaKind { kSync, kWgmma, kTma, kTmaFolded };

/// True for the kinds that run on Hopper's warpgroup MMA (sm_90a only).
constexpr bool is_hopper(MmaKind k) { return k != MmaKind::kSync; }
constexpr bool is_tma(MmaKind k) { return k == MmaKind::kTma || k == MmaKind::kTmaFolded; }

/// A tile shape for the forward kernel. The tuner varies only this.
struct TileConfig {
  int block_m = 64;
  int block_n = 64;
  int warps = 4;
  int stages = 2;
  MmaKind mma = MmaKind::kSync;

  /// Canonical key, e.g. "bm128.bn64.w4.s2" (mma.sync), "bm128.bn128.w8.s2.wgmma", or with
  /// ".tma" / ".tmafold" for the TMA kinds;
  /// parse_tile_key() inverts it.
  std::string key() const;
  friend bool operator==(const TileConfig&, const TileConfig&) = default;
};

/// A GPU target NVRTC compiles for: compute capability and whether the arch-specific (`a`)
/// feature set is used.
struct Arch {
  int cc = 90;          ///< major * 10 + minor
  bool arch_specific = false;  ///< sm_90a
  std::string name() const;    ///< "sm_90a"
  int max_shared_bytes() const;
  friend bool operator==(const Arch&, const Arch&) = default;
};

/// Archs rajit generates for: sm_80, sm_86, sm_89, sm_90, sm_90a.
const std::vector<Arch>& supported_archs();

AttentionSpec parse_spec_key(std::string_view key);  ///< Throws: SpecError
TileConfig parse_tile_key(std::string_view key);     ///< Throws: SpecError
Arch parse_arch(std::string_view name);              ///< "sm_90a"; Throws: SpecError

/// Every problem with the spec, as "field=value: allowed values"; empty when valid.
std::vector<std::string> validate(const AttentionSpec&);
/// Every problem with the tile for this spec on a device with max_shared_bytes per block.
std::vector<std::string> validate(const AttentionSpec&, const TileConfig&, int max_shared_bytes);

void require_valid(const AttentionSpec&);  ///< Throws: SpecError listing validate()'s problems
void require_valid(const AttentionSpec&, const TileConfig&, int max_shared_bytes);

/// Every point of the tile grid (block_m x block_n x warps x stages of each family, valid or
/// not), in the order valid_tiles() and the tuner list them; the wgmma points follow when asked.
std::vector<TileConfig> tile_grid(bool with_wgmma);

/// Every TileConfig the shared validity rule accepts for this spec and shared-memory limit, in
/// numeric (block_m, block_n, warps, stages) order (the tuner's search space); the wgmma tiles
/// follow, in the same order, when `with_wgmma` (the device is sm_90).
std::vector<TileConfig> valid_tiles(const AttentionSpec&, int max_shared_bytes,
                                    bool with_wgmma = false);

/// Whether a tile of this kind can run on a device of compute capability `cc` (major*10+minor).
bool runs_on(const TileConfig&, int cc);

/// Dynamic shared memory the forward kernel of (spec, tile) uses, in bytes (any kind).
int forward_shared_bytes(const AttentionSpec&, const TileConfig&);

/// Procedural kernel entry name: "rajit_fwd_bf16_ds56_r8_d64_causal_colbias_bm128_bn64_w4_s2".
std::string entry_name(const AttentionSpec&, const TileConfig&);

}  // namespace rajit::gen
