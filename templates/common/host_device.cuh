/// RAJIT_HOST_DEVICE: lets plain-C++ headers (limits, params) be shared by host code and NVRTC.
#pragma once
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define RAJIT_HOST_DEVICE __host__ __device__
#else
#define RAJIT_HOST_DEVICE
#endif
