/// libFuzzer target: the ${NAME} renderer and the include flattener never crash on any template text, and Value refuses code injection.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "generator/render.hpp"
#include "generator/spec.hpp"

namespace {
void require(bool ok) {
  if (!ok) std::abort();
}
}  // namespace

// Input: "<template text>\0<identifier value>\0<comment value>"; the values fill ${ID}, ${NOTE}
// and ${N}, so the fuzzer explores both hostile templates and hostile values.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const std::size_t a = all.find('\0');
  const std::string_view text = all.substr(0, a);
  const std::string_view rest = a == std::string_view::npos ? std::string_view() : all.substr(a + 1);
  const std::size_t b = rest.find('\0');
  const std::string_view id = rest.substr(0, b);
  const std::string_view note = b == std::string_view::npos ? std::string_view() : rest.substr(b + 1);
  using namespace rajit::gen;
  Values values;
  values.emplace("N", Value::integer(static_cast<long long>(size) - 7));
  try {
    const Value v = Value::identifier(id);
    // An accepted identifier cannot carry anything but identifier characters.
    for (char c : v.text()) {
      require((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_');
    }
    values.emplace("ID", v);
  } catch (const SpecError&) {
  }
  try {
    const Value v = Value::comment(note);
    require(v.text().find('\n') == std::string::npos && v.text().find("*/") == std::string::npos);
    values.emplace("NOTE", v);
  } catch (const SpecError&) {
  }
  try {
    (void)render(text, values);
  } catch (const SpecError&) {
  }
  try {
    (void)flatten(text, "fuzz.cu.in");
  } catch (const SpecError&) {
  }
  return 0;
}
