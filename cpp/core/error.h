// Engine errors. Native code never exits or aborts on input-dependent paths: it
// throws mstar::Error, which the binding turns into a JS Error carrying `code`.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace mstar {

enum class ErrorCode {
  Argument,    // ERR_ARGUMENT: a parameter has the wrong kind or value
  Shape,       // ERR_SHAPE: sizes do not agree
  Dtype,       // ERR_DTYPE: wrong element type
  Range,       // ERR_RANGE: index or value outside its allowed range
  Format,      // ERR_FORMAT: malformed file contents
  OutOfMemory, // ERR_OOM: host allocation failed
  Detached,    // ERR_DETACHED: a buffer was released or detached
  Unsupported, // ERR_UNSUPPORTED: feature not built or not available on this machine
  Cuda,        // ERR_CUDA: CUDA runtime error
  CudaOom,     // ERR_CUDA_OOM: device allocation failed
  Internal,    // ERR_INTERNAL: a bug; please report
};

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] inline void fail(ErrorCode code, const std::string& message) { throw Error(code, message); }

}  // namespace mstar

// MSTAR_CHECK(cond, Shape, "gemm: lda " << lda << " < k " << k)
#define MSTAR_CHECK(cond, code, msg_stream)                                  \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::ostringstream mstar_check_os_;                                    \
      mstar_check_os_ << msg_stream;                                         \
      ::mstar::fail(::mstar::ErrorCode::code, mstar_check_os_.str());        \
    }                                                                        \
  } while (0)
