/// Strict placeholder rendering, template lookup (embedded or $RAJIT_TEMPLATE_DIR) and flattening.
#include "generator/render.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "generator/embedded_templates.hpp"
#include "generator/spec.hpp"

namespace rajit::gen {
namespace {

bool is_identifier(std::string_view s) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

bool is_placeholder_name(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

const char* template_dir() {
  const char* dir = std::getenv("RAJIT_TEMPLATE_DIR");
  return dir && *dir ? dir : nullptr;
}

}  // namespace

Value Value::integer(long long v) { return Value(std::to_string(v)); }

Value Value::identifier(std::string_view v) {
  if (!is_identifier(v)) throw SpecError({fmt::format("value '{}': not a C identifier", v)});
  return Value(std::string(v));
}

Value Value::comment(std::string_view v) {
  for (char c : v) {
    if (c < 0x20 || c > 0x7e) {
      throw SpecError({fmt::format("comment value '{}': only printable ASCII on one line", v)});
    }
  }
  if (v.find("*/") != std::string_view::npos) {
    throw SpecError({fmt::format("comment value '{}': must not contain */", v)});
  }
  return Value(std::string(v));
}

std::string render(std::string_view text, const Values& values) {
  std::string out;
  out.reserve(text.size());
  std::vector<std::string> problems;
  std::set<std::string, std::less<>> used;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t dollar = text.find("${", pos);
    if (dollar == std::string_view::npos) {
      out.append(text.substr(pos));
      break;
    }
    out.append(text.substr(pos, dollar - pos));
    const std::size_t close = text.find('}', dollar + 2);
    const std::size_t line = 1 + static_cast<std::size_t>(
                                     std::count(text.begin(), text.begin() + static_cast<long>(dollar), '\n'));
    if (close == std::string_view::npos || !is_placeholder_name(text.substr(dollar + 2, close - dollar - 2))) {
      problems.push_back(fmt::format("line {}: malformed placeholder (expected ${{UPPER_SNAKE}})", line));
      out.append("${");
      pos = dollar + 2;
      continue;
    }
    const std::string_view name = text.substr(dollar + 2, close - dollar - 2);
    if (auto it = values.find(name); it != values.end()) {
      out.append(it->second.text());
      used.insert(std::string(name));
    } else {
      problems.push_back(fmt::format("line {}: unknown placeholder ${{{}}}", line, name));
    }
    pos = close + 1;
  }
  for (const auto& [name, value] : values) {
    if (!used.count(name)) problems.push_back(fmt::format("value {} is never used", name));
  }
  if (!problems.empty()) throw SpecError(std::move(problems));
  return out;
}

std::string template_text(std::string_view path) {
  if (const char* dir = template_dir()) {
    std::ifstream in(std::string(dir) + "/" + std::string(path), std::ios::binary);
    if (!in) {
      throw SpecError({fmt::format("template '{}' not found under RAJIT_TEMPLATE_DIR={}", path, dir)});
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  for (std::size_t i = 0; i < detail::kEmbeddedTemplateCount; ++i) {
    if (detail::kEmbeddedTemplates[i].path == path) return std::string(detail::kEmbeddedTemplates[i].text);
  }
  throw SpecError({fmt::format("template '{}' is not embedded in this build", path)});
}

std::string template_set_hash() {
  if (template_dir() == nullptr) return detail::kTemplateSetHash;
  // Templates read from disk: hash what is there now so edits never reuse a stale cache entry.
  std::string all;
  for (std::size_t i = 0; i < detail::kEmbeddedTemplateCount; ++i) {
    const std::string_view p = detail::kEmbeddedTemplates[i].path;
    all += std::string(p) + "\n" + template_text(p) + "\n";
  }
  // FNV-1a is enough here: the hash only has to change when the text does; the cache key itself
  // also includes the full rendered source.
  unsigned long long h = 1469598103934665603ull;
  for (unsigned char c : all) h = (h ^ c) * 1099511628211ull;
  return fmt::format("dir{:016x}", h);
}

namespace {

void flatten_into(std::string_view text, std::string_view origin, std::set<std::string>& seen,
                  std::string& out) {
  std::size_t line_no = 0;
  std::size_t pos = 0;
  out += fmt::format("#line 1 \"{}\"\n", origin);
  while (pos <= text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    const std::string_view line = text.substr(pos, eol - pos);
    ++line_no;
    std::string_view trimmed = line;
    while (!trimmed.empty() && (trimmed.front() == ' ' || trimmed.front() == '\t')) trimmed.remove_prefix(1);
    if (trimmed.rfind("#pragma once", 0) == 0) {
      out += "\n";
    } else if (trimmed.rfind("#include \"", 0) == 0) {
      const std::size_t end = trimmed.find('"', 10);
      const std::string inc(trimmed.substr(10, end - 10));
      if (!seen.count(inc)) {
        seen.insert(inc);
        flatten_into(template_text(inc), inc, seen, out);
      }
      out += fmt::format("#line {} \"{}\"\n", line_no + 1, origin);
    } else if (trimmed.rfind("#include", 0) == 0) {
      throw SpecError({fmt::format("{}:{}: templates may include only other templates (\"...\"); "
                                   "generated kernels need no toolkit header",
                                   origin, line_no)});
    } else {
      out.append(line);
      out += "\n";
    }
    if (eol == text.size()) break;
    pos = eol + 1;
  }
}

}  // namespace

std::string flatten(std::string_view text, std::string_view origin) {
  std::set<std::string> seen;
  std::string out;
  flatten_into(text, origin, seen, out);
  return out;
}

}  // namespace rajit::gen
