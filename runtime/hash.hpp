/// SHA-256 and the length-prefixed key hasher behind every cache key (S39); self-contained so keys never depend on std::hash or a crypto library.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace rajit::rt {

/// Incremental SHA-256 (FIPS 180-4). Not thread-safe; cheap to copy.
class Sha256 {
 public:
  using Digest = std::array<std::uint8_t, 32>;

  Sha256() noexcept;
  void update(std::span<const std::byte> data) noexcept;
  void update(std::string_view data) noexcept;
  /// Returns the digest of everything added so far; leaves this object unchanged.
  Digest digest() const noexcept;

 private:
  void compress(const std::uint8_t* block) noexcept;

  std::array<std::uint32_t, 8> state_;
  std::array<std::uint8_t, 64> buffer_{};
  std::size_t buffered_ = 0;
  std::uint64_t total_bytes_ = 0;
};

/// Lowercase hex of a digest (64 characters).
std::string to_hex(const Sha256::Digest& digest);

Sha256::Digest sha256(std::string_view data) noexcept;
/// SHA-256 of `data` as 64 lowercase hex digits. Throws: std::bad_alloc only.
std::string sha256_hex(std::string_view data);

/// Hashes a sequence of fields so that field boundaries are unambiguous: each field is fed as an
/// 8-byte little-endian length followed by its bytes, so ("ab","c") and ("a","bc") differ (S39).
class KeyHasher {
 public:
  void add(std::string_view field) noexcept;
  void add(std::int64_t number) noexcept;
  /// 64 lowercase hex digits; the hasher stays usable.
  std::string hex() const;
  Sha256::Digest digest() const noexcept { return sha_.digest(); }

 private:
  Sha256 sha_;
};

}  // namespace rajit::rt
