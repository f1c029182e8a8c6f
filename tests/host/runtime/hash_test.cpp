/// Host tests for the self-written SHA-256 and the length-prefixed KeyHasher (S39).
#include <doctest/doctest.h>

#include <string>

#include "runtime/hash.hpp"

using rajit::rt::KeyHasher;
using rajit::rt::Sha256;
using rajit::rt::sha256_hex;

TEST_CASE("sha256: matches the FIPS 180-4 test vectors") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(sha256_hex(std::string(1000000, 'a')) ==
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("sha256: padding boundaries around 55, 56 and 64 bytes agree with known digests") {
  // 55 bytes fit one block with the length; 56 forces a second padding block.
  CHECK(sha256_hex(std::string(55, 'a')) ==
        "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  CHECK(sha256_hex(std::string(56, 'a')) ==
        "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  CHECK(sha256_hex(std::string(64, 'a')) ==
        "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

TEST_CASE("sha256: incremental updates in any chunking equal the one-shot digest") {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(static_cast<char>(i * 7 + 3));
  const std::string expected = sha256_hex(data);
  for (std::size_t chunk : {1u, 3u, 63u, 64u, 65u, 200u}) {
    CAPTURE(chunk);
    Sha256 sha;
    for (std::size_t at = 0; at < data.size(); at += chunk) {
      sha.update(std::string_view(data).substr(at, chunk));
    }
    CHECK(rajit::rt::to_hex(sha.digest()) == expected);
  }
}

TEST_CASE("KeyHasher: field boundaries are part of the key") {
  KeyHasher ab_c;
  ab_c.add("ab");
  ab_c.add("c");
  KeyHasher a_bc;
  a_bc.add("a");
  a_bc.add("bc");
  KeyHasher abc;
  abc.add("abc");
  CHECK(ab_c.hex() != a_bc.hex());
  CHECK(ab_c.hex() != abc.hex());
  CHECK(abc.hex() != sha256_hex("abc"));  // the length prefix is hashed too
}

TEST_CASE("KeyHasher: equal field sequences give equal 64-digit keys, and hex() does not finalize") {
  KeyHasher a;
  KeyHasher b;
  for (const char* f : {"fwd", "", "sm_90a", "13.0"}) {
    a.add(f);
    b.add(f);
  }
  const std::string first = a.hex();
  CHECK(first.size() == 64);
  CHECK(first == b.hex());
  CHECK(a.hex() == first);  // calling twice is stable
  a.add("more");
  CHECK(a.hex() != first);  // and the hasher keeps accepting fields
}

TEST_CASE("KeyHasher: an empty field still changes the key") {
  KeyHasher none;
  KeyHasher empty;
  empty.add("");
  CHECK(none.hex() != empty.hex());
  KeyHasher number;
  number.add(std::int64_t{42});
  KeyHasher text;
  text.add("42");
  CHECK(number.hex() == text.hex());  // numbers are hashed as their decimal text
}
