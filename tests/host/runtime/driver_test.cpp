/// Host tests for the driver table: ABI versions, the fake-driver hook (S56), context and device helpers.
#include <doctest/doctest.h>

#include <cudaTypedefs.h>

#include <set>
#include <string>
#include <type_traits>

#include "runtime/driver.hpp"
#include "tests/host/runtime/runtime_test_support.hpp"

using rajit::test::FakeDriver;

TEST_CASE("DriverApi: every entry's ABI version matches its cudaTypedefs.h PFN typedef") {
  int checked = 0;
#define RAJIT_TEST_CHECK_PFN(name, version)                                   \
  {                                                                           \
    CAPTURE(#name);                                                           \
    CHECK(std::is_same_v<decltype(rajit::rt::DriverApi::name),               \
                         PFN_##name##_v##version>);                           \
    ++checked;                                                                \
  }
  RAJIT_DRIVER_API(RAJIT_TEST_CHECK_PFN)
#undef RAJIT_TEST_CHECK_PFN
  CHECK(checked == static_cast<int>(rajit::rt::driver_entries().size()));
}

TEST_CASE("DriverApi: the table names each entry point once, by its unversioned name") {
  std::set<std::string> names;
  for (const rajit::rt::DriverEntry& e : rajit::rt::driver_entries()) {
    CAPTURE(e.name);
    CHECK(names.insert(e.name).second);
    CHECK(std::string(e.name).find("_v2") == std::string::npos);
    CHECK(e.version >= 2000);
  }
  for (const char* required : {"cuInit", "cuModuleLoadData", "cuLaunchKernel", "cuMemAlloc",
                               "cuEventElapsedTime", "cuPointerGetAttribute"}) {
    CAPTURE(required);
    CHECK(names.count(required) == 1);
  }
}

TEST_CASE("probe_driver: failure and driver() agree, on any machine") {
  const rajit::rt::DriverStatus status = rajit::rt::probe_driver();
  if (status.ok) {
    CHECK_NOTHROW(rajit::rt::driver());
    CHECK(status.version > 0);
  } else {
    CHECK_FALSE(status.reason.empty());
    CHECK_THROWS_WITH_AS(rajit::rt::driver(), doctest::Contains(status.reason.c_str()),
                         rajit::rt::NoDriverError);
  }
}

TEST_CASE("install_driver_for_testing: a fake whose cuInit fails makes driver() throw NoDriverError") {
  FakeDriver fake;
  fake.init_result = CUDA_ERROR_NO_DEVICE;
  fake.reinstall();  // the status is taken at install time
  const rajit::rt::DriverStatus status = rajit::rt::probe_driver();
  CHECK_FALSE(status.ok);
  CHECK(status.reason == "cuInit: CUDA_ERROR_NO_DEVICE");
  CHECK_THROWS_WITH_AS(rajit::rt::driver(), doctest::Contains("CUDA_ERROR_NO_DEVICE"),
                       rajit::rt::NoDriverError);
}

TEST_CASE("install_driver_for_testing: the fake is used until nullptr restores the real driver") {
  const rajit::rt::DriverStatus real = rajit::rt::probe_driver();
  {
    FakeDriver fake;
    CHECK(&rajit::rt::driver() == &fake.api());
    CHECK(rajit::rt::probe_driver().ok);
    CHECK(rajit::rt::probe_driver().version == 13000);
  }
  const rajit::rt::DriverStatus after = rajit::rt::probe_driver();
  CHECK(after.ok == real.ok);
  CHECK(after.reason == real.reason);
}

TEST_CASE("make_primary_context_current: retains once per device and switches contexts") {
  FakeDriver fake;
  FakeDriver::current() = nullptr;
  CHECK(rajit::rt::make_primary_context_current(0) == FakeDriver::context_of(0));
  CHECK(rajit::rt::make_primary_context_current(0) == FakeDriver::context_of(0));
  CHECK(fake.retains == 1);
  CHECK(fake.set_current == 1);  // already current the second time
  CHECK(rajit::rt::current_device() == 0);
  CHECK(rajit::rt::make_primary_context_current(1) == FakeDriver::context_of(1));
  CHECK(fake.retains == 2);
  CHECK(rajit::rt::current_device() == 1);
  CHECK_THROWS_WITH_AS(rajit::rt::make_primary_context_current(7),
                       doctest::Contains("CUDA_ERROR_INVALID_DEVICE"), rajit::rt::DriverError);
}

TEST_CASE("make_primary_context_current: a new fake does not inherit an old fake's contexts") {
  {
    FakeDriver first;
    rajit::rt::make_primary_context_current(0);
    CHECK(first.retains == 1);
  }
  FakeDriver second;  // likely at the same address as `first`
  rajit::rt::make_primary_context_current(0);
  CHECK(second.retains == 1);
}

TEST_CASE("device_info: reports the driver's attributes") {
  FakeDriver fake;
  CHECK(rajit::rt::device_count() == 2);
  const rajit::rt::DeviceInfo info = rajit::rt::device_info(1);
  CHECK(info.ordinal == 1);
  CHECK(info.name == "Fake GPU 1");
  CHECK(info.cc_major == 9);
  CHECK(info.cc_minor == 0);
  CHECK(info.sm_count == 132);
  CHECK(info.total_mem == (std::size_t{80} << 30));
  CHECK(info.max_smem_per_block_optin == 232448);
  CHECK(info.l2_bytes == 50 * 1024 * 1024);
}

TEST_CASE("result_name: falls back to a built-in table when the driver cannot name a result") {
  FakeDriver fake;  // has no cuGetErrorName
  CHECK(std::string(rajit::rt::result_name(CUDA_ERROR_NO_BINARY_FOR_GPU)) ==
        "CUDA_ERROR_NO_BINARY_FOR_GPU");
  CHECK(std::string(rajit::rt::result_string(CUDA_ERROR_NO_BINARY_FOR_GPU)).empty());
}
