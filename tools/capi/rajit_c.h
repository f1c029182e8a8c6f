/// The C ABI of rajit (librajit_c.so): plain C structs and status codes, so that ctypes, cffi or
/// any FFI can call the library without C++ types, exceptions or a compiler.
///
/// Conventions. Every function returns a rajit_status; on anything but RAJIT_OK the calling
/// thread's rajit_last_error() holds the message (for invalid arguments: every problem, one per
/// line, each naming the field, exactly as the C++ ArgumentError/SpecError says it). No C++
/// exception ever crosses this boundary. All functions are thread-safe. Device pointers are
/// CUDA device addresses in the primary context of the device that owns q_std; `stream` is a
/// CUstream (NULL = the legacy default stream). Shapes and strides are in elements, ordered
/// (batch, head, row, column), and stride[3] must be 1.
#ifndef RAJIT_C_H_
#define RAJIT_C_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(RAJIT_C_BUILDING)
#define RAJIT_C_API __attribute__((visibility("default")))
#else
#define RAJIT_C_API
#endif

/// Bumped whenever a struct below changes layout; rajit_abi_version() returns it so a binding can
/// refuse a library it was not written for.
#define RAJIT_C_ABI_VERSION 1

typedef enum rajit_status {
  RAJIT_OK = 0,
  RAJIT_INVALID_ARGUMENT = 1,  ///< bad spec, shape, stride, alignment or pointer (nothing launched)
  RAJIT_COMPILE_ERROR = 2,     ///< NVRTC rejected the generated source
  RAJIT_NVRTC_ERROR = 3,       ///< libnvrtc missing or failed (not a source error)
  RAJIT_DRIVER_ERROR = 4,      ///< a CUDA driver call failed
  RAJIT_NO_GPU = 5,            ///< libcuda could not be loaded or initialised, or no device
  RAJIT_INTERNAL = 6           ///< anything else (a bug in rajit)
} rajit_status;

typedef enum rajit_bias_kind { RAJIT_BIAS_NONE = 0, RAJIT_BIAS_COLUMN = 1 } rajit_bias_kind;
typedef enum rajit_dtype { RAJIT_FP16 = 0, RAJIT_BF16 = 1 } rajit_dtype;

/// The RA function (ra-math.md): (d_std, r, head_dim, causal, bias, dtype).
typedef struct rajit_spec {
  int32_t d_std;
  int32_t r;
  int32_t head_dim;
  int32_t causal;  ///< 0 or 1
  int32_t bias;    ///< rajit_bias_kind
  int32_t dtype;   ///< rajit_dtype (ignored by the float64 reference)
} rajit_spec;

/// A strided 4-D tensor (batch, head, row, column). `ptr` is const for inputs and written for
/// outputs; the struct is the same either way.
typedef struct rajit_tensor {
  void* ptr;
  int64_t shape[4];
  int64_t stride[4];
} rajit_tensor;

/// The per-key bias beta[b?, h, j], unit stride along j; batch_stride 0 = shared over the batch.
typedef struct rajit_bias {
  void* ptr;  ///< float* on the device; double* for the reference
  int64_t batch_stride;
  int64_t head_stride;
} rajit_bias;

/// One forward call (rajit::ForwardArgs). Device pointers; gates are (H) fp32, NULL = all ones.
typedef struct rajit_forward_args {
  rajit_spec spec;
  rajit_tensor q_std, k_low, k_std, q_low, v;
  rajit_tensor o;         ///< written, (B,H,Tq,head_dim)
  float* lse;             ///< optional, written: (B,H,Tq) fp32 contiguous
  rajit_bias bias;        ///< required iff spec.bias == RAJIT_BIAS_COLUMN
  const float* w_std;
  const float* w_rec;
  const float* w_disc;
  double scale;           ///< 0 = 1/sqrt(d_std + r)
  void* stream;           ///< CUstream
  const char* tile;       ///< optional tile key "bm128.bn64.w4.s2"; NULL or "" = the heuristic
} rajit_forward_args;

/// One backward call (rajit::BackwardArgs): the forward's inputs, its O and LSE, dO, and one
/// output per gradient (overwritten, never accumulated into).
typedef struct rajit_backward_args {
  rajit_spec spec;
  rajit_tensor q_std, k_low, k_std, q_low, v;
  rajit_tensor o;         ///< the forward's output
  rajit_tensor d_o;       ///< dLoss/dO
  const float* lse;       ///< the forward's LSE, (B,H,Tq) fp32 contiguous
  rajit_bias bias;
  const float* w_std;
  const float* w_rec;
  const float* w_disc;
  double scale;           ///< must equal the forward's
  rajit_tensor dq_std, dk_low, dk_std, dq_low, dv;  ///< written; r == 0 ignores dk_low/dq_low
  float* d_bias;          ///< bias == column: written, layout of `bias` (strides below); else NULL
  int64_t d_bias_batch_stride;
  int64_t d_bias_head_stride;
  float* dw_std;          ///< optional (H) fp32 outputs; NULL = not wanted
  float* dw_rec;          ///< r > 0 only
  float* dw_disc;         ///< bias == column only
  void* workspace;        ///< >= rajit_backward_workspace_bytes(), 256-byte aligned; NULL = rajit allocates
  size_t workspace_bytes;
  int32_t deterministic;  ///< 1 = bitwise-identical gradients run to run
  void* stream;           ///< CUstream
} rajit_backward_args;

/// The float64 CPU reference (ra-math.md, tuner/reference.hpp) on host tensors. Every tensor,
/// input or output, is double with arbitrary non-negative strides; gates are (H) double, NULL =
/// ones; bias as above (double*).
typedef struct rajit_reference_args {
  rajit_spec spec;
  rajit_tensor q_std, k_low, k_std, q_low, v;
  rajit_bias bias;
  const double* w_std;
  const double* w_rec;
  const double* w_disc;
  double scale;  ///< 0 = 1/sqrt(d_std + r)
} rajit_reference_args;

/// Outputs of rajit_reference_backward; every pointer optional (NULL = not wanted).
typedef struct rajit_reference_grads {
  rajit_tensor dq_std, dk_low, dk_std, dq_low, dv;  ///< ptr NULL = not wanted
  double* d_bias;  ///< layout of `bias` (shared bias: the batch-summed gradient)
  int64_t d_bias_batch_stride;
  int64_t d_bias_head_stride;
  double* dw_std;  ///< (H)
  double* dw_rec;
  double* dw_disc;
} rajit_reference_grads;

/// "0.1.0"; never fails.
RAJIT_C_API const char* rajit_version(void);
/// RAJIT_C_ABI_VERSION of the library.
RAJIT_C_API int rajit_abi_version(void);
/// The message of the calling thread's last failed call ("" if none); valid until that thread's
/// next rajit call.
RAJIT_C_API const char* rajit_last_error(void);
/// A short name of a status ("RAJIT_INVALID_ARGUMENT").
RAJIT_C_API const char* rajit_status_name(int status);

/// What is there: a JSON object {"version", "abi", "templates", "cache_dir", "nvrtc": {"ok",
/// "version", "library", "reason"}, "driver": {"ok", "version", "reason"}, "gpus": [{"ordinal",
/// "name", "cc", "sm_count", "total_mem", "max_smem_per_block"}]}. Never needs a GPU; probing
/// never fails (a missing piece is reported inside the JSON). *json is valid until the calling
/// thread's next rajit call.
RAJIT_C_API rajit_status rajit_info_json(const char** json);
/// Number of usable GPUs (0 without a driver, never an error).
RAJIT_C_API int rajit_device_count(void);

/// Launches the forward on args->stream (asynchronous).
RAJIT_C_API rajit_status rajit_forward(const rajit_forward_args* args);
/// Problems rajit_forward would refuse, without launching or touching the GPU.
RAJIT_C_API rajit_status rajit_check_forward(const rajit_forward_args* args);
/// Launches every requested gradient on args->stream (asynchronous).
RAJIT_C_API rajit_status rajit_backward(const rajit_backward_args* args);
/// Bytes of workspace rajit_backward needs for these shapes (no GPU needed).
RAJIT_C_API rajit_status rajit_backward_workspace_bytes(const rajit_backward_args* args,
                                                        size_t* bytes);

/// Float64 CPU reference forward: writes o (B,H,Tq,head_dim) and, if non-NULL, lse (B,H,Tq)
/// contiguous (-inf for rows with no visible key).
RAJIT_C_API rajit_status rajit_reference_forward(const rajit_reference_args* args, rajit_tensor o,
                                                 double* lse);
/// Float64 CPU reference backward for upstream d_o (B,H,Tq,head_dim).
RAJIT_C_API rajit_status rajit_reference_backward(const rajit_reference_args* args,
                                                  rajit_tensor d_o,
                                                  const rajit_reference_grads* grads);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // RAJIT_C_H_
