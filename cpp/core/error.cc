#include "error.h"

namespace mstar {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::Argument: return "ERR_ARGUMENT";
    case ErrorCode::Shape: return "ERR_SHAPE";
    case ErrorCode::Dtype: return "ERR_DTYPE";
    case ErrorCode::Range: return "ERR_RANGE";
    case ErrorCode::Format: return "ERR_FORMAT";
    case ErrorCode::OutOfMemory: return "ERR_OOM";
    case ErrorCode::Detached: return "ERR_DETACHED";
    case ErrorCode::Unsupported: return "ERR_UNSUPPORTED";
    case ErrorCode::Cuda: return "ERR_CUDA";
    case ErrorCode::CudaOom: return "ERR_CUDA_OOM";
    case ErrorCode::Internal: return "ERR_INTERNAL";
  }
  return "ERR_INTERNAL";
}

}  // namespace mstar
