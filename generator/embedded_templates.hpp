/// The table of templates/ files compiled into the library (written by cmake/embed_templates.cmake).
#pragma once
#include <cstddef>
#include <string_view>

namespace rajit::gen::detail {

struct EmbeddedTemplate {
  std::string_view path;  ///< relative to templates/, e.g. "attention/fwd.cuh"
  std::string_view text;
};

extern const EmbeddedTemplate kEmbeddedTemplates[];  ///< sorted by path
extern const std::size_t kEmbeddedTemplateCount;
extern const char* const kTemplateSetHash;  ///< first 16 hex digits of SHA-256 over paths + texts

}  // namespace rajit::gen::detail
