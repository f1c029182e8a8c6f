/// The strict ${UPPER_SNAKE} renderer and the flattener that inlines template includes (S16, S25).
#pragma once
#include <map>
#include <string>
#include <string_view>

namespace rajit::gen {

/// A placeholder value with a kind checked on construction, so no value can inject code:
/// integers are digits, identifiers are C identifiers, comments are one printable line.
class Value {
 public:
  static Value integer(long long v);
  static Value identifier(std::string_view v);  ///< Throws: SpecError if not [A-Za-z_][A-Za-z0-9_]*
  static Value comment(std::string_view v);     ///< Throws: SpecError on newlines, "*/" or non-ASCII
  const std::string& text() const { return text_; }

 private:
  explicit Value(std::string t) : text_(std::move(t)) {}
  std::string text_;
};

using Values = std::map<std::string, Value, std::less<>>;

/// Replaces every ${NAME} in `text`. Throws: SpecError listing every unknown placeholder, every
/// value no placeholder used and every malformed "${", all at once.
std::string render(std::string_view text, const Values& values);

/// Text of a template file (path relative to templates/). Reads $RAJIT_TEMPLATE_DIR when set,
/// else the copy embedded at build time. Throws: SpecError if there is no such template.
std::string template_text(std::string_view path);

/// Hash identifying the template set in use (embedded, or hashed from $RAJIT_TEMPLATE_DIR).
std::string template_set_hash();

/// Inlines every `#include "x"` of `text` from the template set (each file once, `#pragma once`
/// dropped, `#line` markers kept so compiler messages name the real template lines). The result
/// needs no include path. Throws: SpecError on a missing template.
std::string flatten(std::string_view text, std::string_view origin);

}  // namespace rajit::gen
